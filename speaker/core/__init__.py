"""Pure logic of the speaker (planning, election, command building). No I/O imports."""
