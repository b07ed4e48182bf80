"""Release notifications: one message per release outcome to a webhook (generic JSON, Slack, Microsoft Teams).

notice (what happened, from the verdict and the commit) -> formats (one payload per service) -> delivery
(the URL from a flag or a mounted Secret, validated, never shown; retries with backoff; never raises).
"""
