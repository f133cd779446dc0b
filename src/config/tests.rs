// Unit tests: see the table-driven cases added alongside.
