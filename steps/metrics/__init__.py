"""Metrics: talking to Prometheus, the built-in Istio PromQL, custom metric templates, counter windows."""
