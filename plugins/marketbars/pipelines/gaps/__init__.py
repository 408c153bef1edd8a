"""gap_detection_and_retry: completeness by the XNYS calendar, the gap ledger, retries, report, alerts."""
