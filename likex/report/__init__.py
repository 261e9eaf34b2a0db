"""Reports: one module per report, each writing Markdown and plots from a result."""
