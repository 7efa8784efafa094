//! Many images from one repository: the plan of a set of recipes (a DAG of images whose edges
//! are `[source] parent` queries naming another image of the set, grouped in levels a CI
//! engine can fan out), `bake` (its executor on this host), and the artifacts CI tools read.
pub mod bake;
pub mod github;
pub mod graph;
pub mod plan;
pub mod properties;
