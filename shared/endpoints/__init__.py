"""The HTTP functions: parse the request, check who is asking, do the work through the layers below,
answer in the JSON error contract (``http``). One module per route family."""
