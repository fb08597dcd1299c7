"""dm-job's ``utils`` package, as handler folders import it (only ``utils.logging`` is provided)."""
