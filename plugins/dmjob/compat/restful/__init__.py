"""dm-job's ``restful`` package, as far as handler folders import it (its exceptions)."""
