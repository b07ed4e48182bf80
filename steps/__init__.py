"""The code of rollguard's step containers (deploy, analyze, promote, rollback) and what they share."""
