"""The payload log (SPEC 14): a record of each answered request, and its replay."""
