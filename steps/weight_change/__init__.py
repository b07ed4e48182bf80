"""What deploy, promote and rollback share: the flow Git push -> ArgoCD sync -> live patch, and its parts.

flags.py (the commands' flags), change.py (what a step asks for, and the change made to the file),
report.py (--result-file, --commit-file), cluster.py (ArgoCD and the live VirtualService), flow.py (the run).
"""
