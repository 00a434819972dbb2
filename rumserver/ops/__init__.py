"""Operations: what whoever runs llmrum asks of a node (/healthz, /metrics)."""
