"""The business rules: lifecycle (what each status allows), access (who sees what), field validation, OS matrix."""
