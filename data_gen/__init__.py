"""What generates data: `lsm world`, the LLM teacher, the planted reference society, `lsm gen`
and the committed reference corpora (docs/design.md §3-§4)."""
