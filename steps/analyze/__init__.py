"""`rollguard analyze`: judge a canary from Prometheus and write the verdict (and, told so, roll back on it).

command (the CLI entry) -> flags, settings (typed, validated) -> loop (checks until a decision) ->
check_reader (one check's numbers from Prometheus), check_log (the log lines), verdict_files (output),
rollback_now (--rollback-on-fail: `rollguard rollback`'s code, run on the verdict in this process).
"""
