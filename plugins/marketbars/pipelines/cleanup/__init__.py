"""weekly_cleanup: retention by partitions, ledger pruning, temporary files, VACUUM."""
