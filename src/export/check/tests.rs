//! Hostile-input tests of the checkers.
