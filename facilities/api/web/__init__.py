"""The residents' status pages and the staff console (HTML), served by `facilities run`."""
