"""The public side's HTTP/1.1 server: an asyncio protocol on httptools (llhttp)."""
