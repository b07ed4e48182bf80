"""Hera definitions of rollguard's WorkflowTemplates, and `rollguard render`, which writes them as YAML."""
