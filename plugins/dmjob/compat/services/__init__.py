"""dm-job's ``services`` package, as handler folders import it (only the handler interface is provided)."""
