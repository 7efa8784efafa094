//! Recipes: TOML model, parsing with file:line errors, and the validated build plan.
pub mod accounts;
pub mod aws;
pub mod error;
pub mod expand;
pub mod matrix;
pub mod model;
pub mod parse;
pub mod plan;
pub mod seal;
pub mod size;
pub mod test;
pub mod vars;

pub use error::RecipeError;
pub use plan::BuildPlan;
