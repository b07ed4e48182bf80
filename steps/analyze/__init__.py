"""`rollguard analyze`: judge a canary from Prometheus and write the verdict.

command (the CLI entry) -> flags, settings (typed, validated) -> loop (checks until a decision) ->
check_reader (one check's numbers from Prometheus), check_log (the log lines), verdict_files (output).
"""
