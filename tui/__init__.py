"""The admin terminal UI (Textual): screens, widgets and the message catalog."""
