"""Planning: draft grid plans, their edits, files, validation, diff, publication and automatic drafts."""
