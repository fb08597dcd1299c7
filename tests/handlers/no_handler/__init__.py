"""A folder that looks like a handler folder but defines neither _SUPPORTED_TYPE nor JobHandler."""

HELPER = "not a job handler"
