"""Pure logic of the speaker (planning, election, command building, the layer-2 reply
decision). No I/O imports."""
