"""What the measurements (``bench``) and the study (``experiments``) both need, so neither imports the
other: pinned assets and datasets, a service process to measure, the load generator and its CPU
split, the machine's record, and the writer of generated README/docs sections."""
