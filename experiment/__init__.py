"""The rollback-time experiment: repeated runs, their timestamps, a report and a timeline plot."""
