"""Storage: one module per table family or transaction of the ``market`` schema, and the hook.
Receives bars in ``marketbars.market``'s schema; knows no vendor."""
