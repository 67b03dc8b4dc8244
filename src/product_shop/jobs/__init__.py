"""Work that crosses another module's network boundary and owns its units of work: run by a
request (inline) and in the background (the API process for the embedded default, `product-shop`
commands in production)."""
