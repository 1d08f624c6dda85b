"""The domain: listings, portals and statuses as plain data, the unified-state rules, ids, cursors and the error tree. Imports no framework."""
