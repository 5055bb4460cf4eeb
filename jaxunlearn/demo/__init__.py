"""The quick demo: tiny model, synthetic benchmark, unlearning stages (`jaxunlearn demo`)."""
