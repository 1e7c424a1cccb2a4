"""The kubeinfer worker runtime: strategies, model loading, exactly-once outputs and local runs."""
