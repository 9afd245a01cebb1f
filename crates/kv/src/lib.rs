//! Coming with its issue.
