"""The business rules: lifecycle (what each status allows; every status change), access (who sees and may change
what), field validation, redaction."""
