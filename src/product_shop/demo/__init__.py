"""Demo data and the embedded demo set-up (`product-shop demo`)."""
