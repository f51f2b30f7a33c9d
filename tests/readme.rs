//! The README's config reference is generated from the directive table;
//! this keeps the two from drifting apart.

const README: &str = include_str!("../README.md");
const BEGIN: &str = "<!-- directives:begin -->\n";
const END: &str = "<!-- directives:end -->";

#[test]
fn readme_reference_matches_the_directive_table() {
    let table = herd::config::directives::reference_markdown();
    let start = README
        .find(BEGIN)
        .expect("README has the directives:begin marker")
        + BEGIN.len();
    let end = README
        .find(END)
        .expect("README has the directives:end marker");
    if README[start..end] != table {
        // Print the fresh table so it can be pasted in.
        panic!("README.md's directive reference is out of date; replace it with:\n{table}");
    }
}
