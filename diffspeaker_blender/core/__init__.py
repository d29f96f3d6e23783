"""Pure logic for the add-on (numpy only, no bpy), so it can be tested in plain pytest."""
