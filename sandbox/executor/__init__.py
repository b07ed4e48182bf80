"""A local executor for rendered Argo WorkflowTemplates: runs each container step as a local process."""
