"""The rows of the tables: one module owns each kind of row (its key, its entity shape, the queries on
it). ``mailbox`` says which module owns which row of the mailbox partition."""
