//! The fleet view (`stationd fleet`): placeholder module while it is built.
