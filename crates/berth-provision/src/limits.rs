//! The limits of each product's PostgreSQL role (`[limits] db_connections`,
//! `statement_timeout`): the SQL that sets them, and the check that the products'
//! connection limits fit in the server's `max_connections`. The one place that knows
//! this SQL, so it moves with whatever runs statements on the server.

use berth_manifest::{DbLimits, Manifest, effective_db_limits, limits::ADMIN_RESERVE};

/// `"name"`, with `"` doubled: a PostgreSQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statements that give `role` its limits: a connection limit (the server refuses
/// the role's next connection past it) and a statement timeout (the server cancels a
/// statement that runs longer), both idempotent.
pub fn role_limit_statements(role: &str, l: &DbLimits) -> Vec<String> {
    let ms = l.statement_timeout.as_millis().max(1);
    vec![
        format!(
            "ALTER ROLE {} CONNECTION LIMIT {};",
            ident(role),
            l.connections
        ),
        format!("ALTER ROLE {} SET statement_timeout = {ms};", ident(role)),
    ]
}

/// `statement_timeout` as people read it (`1m`, `30s`, `1500ms`).
pub fn timeout_text(l: &DbLimits) -> String {
    berth_manifest::duration::HumanDuration(l.statement_timeout).to_string()
}

/// The query that reads what [`check_fits`] needs: `max_connections` and
/// `superuser_reserved_connections`, one per line.
pub const SERVER_LIMITS_QUERY: &str = "SELECT current_setting('max_connections') UNION ALL SELECT current_setting('superuser_reserved_connections')";

/// Every product with a database, and its role's limits.
pub fn products_db_limits(m: &Manifest) -> Vec<(String, DbLimits)> {
    m.products
        .iter()
        .filter(|(_, p)| p.database.is_some())
        .map(|(n, _)| (n.clone(), effective_db_limits(m, n)))
        .collect()
}

/// The products' connection limits together, plus the server's superuser reserve and
/// berth's [`ADMIN_RESERVE`], must fit in `max_connections`: else one product at its
/// limit could still starve the others. The error says the numbers and the fixes.
pub fn check_fits(
    m: &Manifest,
    max_connections: u64,
    superuser_reserved: u64,
) -> Result<(), String> {
    let products = products_db_limits(m);
    let sum: u64 = products.iter().map(|(_, l)| l.connections).sum();
    let need = sum + superuser_reserved + ADMIN_RESERVE;
    if need <= max_connections {
        return Ok(());
    }
    let each: Vec<String> = products
        .iter()
        .map(|(n, l)| format!("{n} {}", l.connections))
        .collect();
    Err(format!(
        "the products' PostgreSQL connection limits add up to {sum} ({}), which with the server's superuser_reserved_connections ({superuser_reserved}) and berth's reserve for administrators ({ADMIN_RESERVE}) is {need}, more than the server's max_connections ({max_connections}); lower `db_connections` in [limits] or [products.<name>.limits], or raise max_connections on the server",
        each.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statements_quote_the_role_and_write_milliseconds() {
        let l = DbLimits {
            connections: 5,
            statement_timeout: Duration::from_millis(1500),
        };
        assert_eq!(
            role_limit_statements("a\"b", &l),
            [
                "ALTER ROLE \"a\"\"b\" CONNECTION LIMIT 5;",
                "ALTER ROLE \"a\"\"b\" SET statement_timeout = 1500;"
            ]
        );
        assert_eq!(timeout_text(&l), "1s 500ms");
    }
}
