//! `berth product add <name> --like <existing>`: clone a product with the next
//! free host ports, Redis database, key prefix, database and role names and
//! domains, preserving the rest of berth.toml byte for byte.

use std::collections::BTreeSet;

use toml_edit::{DocumentMut, Item, Table, Value};

use crate::diag::Diagnostic;
use crate::init::title_case;
use crate::model::Manifest;

/// The edited manifest and a line per decision, for the user to review.
#[derive(Debug, Clone)]
pub struct AddResult {
    pub toml: String,
    pub changes: Vec<String>,
}

fn fail(code: &'static str, msg: String, help: &str) -> Vec<Diagnostic> {
    vec![Diagnostic::error(code, msg).help(help.to_string())]
}

/// Add product `name` to the manifest `text` as a copy of `like`.
/// The result has passed `berth check`; otherwise nothing is returned but the problems.
pub fn add_product(
    file: &str,
    text: &str,
    name: &str,
    like: &str,
    force: bool,
) -> Result<AddResult, Vec<Diagnostic>> {
    let (loaded, _) = crate::check_str(file, text)?;
    let m = &loaded.manifest;
    let slug = crate::validate::slugify(name);
    if slug != name {
        return Err(fail(
            "product-name",
            format!("product name `{name}` is not a lowercase slug"),
            &format!("use `{slug}`"),
        ));
    }
    let Some(src) = m.products.get(like) else {
        let known: Vec<_> = m.products.keys().map(|k| format!("`{k}`")).collect();
        return Err(fail(
            "unknown-product",
            format!("there is no product `{like}` to copy"),
            &format!(
                "products in {file}: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    if m.products.contains_key(name) && !force {
        return Err(fail(
            "product-exists",
            format!("product `{name}` already exists in {file}"),
            "pass --force to replace it",
        ));
    }

    // What the other products (not the one being replaced) already use.
    let others = || m.products.iter().filter(|(k, _)| k.as_str() != name);
    let mut used_ports: BTreeSet<u16> = others()
        .flat_map(|(_, p)| p.services.values().filter_map(|s| s.host_port))
        .collect();
    for i in [&m.infra.postgres, &m.infra.redis].into_iter().flatten() {
        used_ports.extend(i.port);
    }
    let used_dbs: BTreeSet<u8> = others()
        .filter_map(|(_, p)| p.redis.as_ref().map(|r| r.db))
        .collect();

    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| fail("toml-syntax", e.to_string(), ""))?;
    let mut item = doc["products"][like].clone();
    let mut changes = Vec::new();
    let swap = |s: &str| s.replace(like, name);
    let old_title = src.title(like).to_string();
    let new_title = title_case(name);

    set_str(&mut item, &["display_name"], new_title.clone());
    changes.push(format!("display_name = \"{new_title}\""));

    let paths: Vec<String> = src
        .paths
        .iter()
        .filter(|p| p.contains(like))
        .map(|p| swap(p))
        .collect();
    for dropped in src.paths.iter().filter(|p| !p.contains(like)) {
        changes.push(format!(
            "paths: left out `{dropped}` (it does not name `{like}`, and a path has one owner)"
        ));
    }
    set_array(&mut item, "paths", &paths);
    set_array(&mut item, "aliases", &[name.to_string()]);
    changes.push(format!("aliases = [\"{name}\"]"));

    let domains: Vec<String> = src
        .domains
        .iter()
        .map(|d| {
            if d.contains(like) {
                swap(d)
            } else {
                format!("{name}.{d}")
            }
        })
        .collect();
    if !domains.is_empty() {
        changes.push(format!(
            "domains = [{}]",
            domains
                .iter()
                .map(|d| format!("\"{d}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    set_array(&mut item, "domains", &domains);

    if let Some(db) = &src.database {
        let under = name.replace('-', "_");
        let like_under = like.replace('-', "_");
        let rename = |v: &str| {
            if v.contains(&like_under) {
                v.replace(&like_under, &under)
            } else {
                format!("{under}_{v}")
            }
        };
        let (n, r) = (rename(&db.name), rename(&db.role));
        set_str(&mut item, &["database", "name"], n.clone());
        set_str(&mut item, &["database", "role"], r.clone());
        changes.push(format!("database = {n}, role = {r}"));
    }
    if let Some(r) = &src.redis {
        let Some(db) = (0u8..=15).find(|d| !used_dbs.contains(d)) else {
            return Err(fail(
                "redis-db-exhausted",
                "every Redis database 0-15 is already used by a product".into(),
                "run a second Redis, or raise `databases` on the server and set the number by hand",
            ));
        };
        let sep = r
            .prefix
            .chars()
            .last()
            .filter(|c| !c.is_alphanumeric())
            .map(String::from)
            .unwrap_or_default();
        let prefix = format!("{name}{sep}");
        set_int(&mut item, &["redis", "db"], db as i64);
        set_str(&mut item, &["redis", "prefix"], prefix.clone());
        changes.push(format!("redis db = {db}, prefix = \"{prefix}\""));
    }

    let mut port_map = Vec::new();
    for (sname, svc) in &src.services {
        if let Some(hp) = svc.host_port {
            let Some(next) = (hp.saturating_add(1)..=u16::MAX).find(|p| !used_ports.contains(p))
            else {
                return Err(fail(
                    "port-exhausted",
                    format!("no free host port above {hp} for {name}.{sname}"),
                    "set host_port by hand",
                ));
            };
            used_ports.insert(next);
            port_map.push((hp, next));
            set_int(&mut item, &["services", sname, "host_port"], next as i64);
            changes.push(format!("{sname}: host_port {hp} -> {next}"));
        }
    }
    for (sname, svc) in &src.services {
        for (k, v) in &svc.env {
            let mut nv = v.replace(&old_title, &new_title).replace(like, name);
            for (old, new) in &port_map {
                nv = nv.replace(&format!(":{old}"), &format!(":{new}"));
            }
            if &nv != v {
                set_str(&mut item, &["services", sname, "env", k], nv.clone());
                changes.push(format!("{sname}: env {k} = \"{nv}\""));
            }
        }
    }

    reposition(&mut item, &doc);
    if let Item::Table(t) = &mut item {
        t.decor_mut().set_prefix(format!(
            "\n# Added by `berth product add {name} --like {like}`.\n"
        ));
    }
    doc["products"][name] = item;
    let out = doc.to_string();
    let (_, _) = crate::check_str(file, &out)?;
    let check: Manifest = toml::from_str(&out).map_err(|e| fail("internal", e.to_string(), ""))?;
    debug_assert!(check.products.contains_key(name));
    Ok(AddResult { toml: out, changes })
}

fn slot<'a>(item: &'a mut Item, path: &[&str]) -> Option<&'a mut Item> {
    let mut cur = item;
    for seg in path {
        cur = cur.get_mut(*seg)?;
    }
    Some(cur)
}

fn set_value(item: &mut Item, path: &[&str], v: Value) {
    if let Some(slot) = slot(item, path) {
        // Keep the surrounding whitespace and comments of the value being replaced.
        let decor = slot.as_value().map(|old| old.decor().clone());
        let mut v = v;
        if let Some(d) = decor {
            *v.decor_mut() = d;
        }
        *slot = Item::Value(v);
    } else if let Some((last, parent)) = path.split_last()
        && let Some(p) = slot(item, parent)
        && let Some(t) = p.as_table_like_mut()
    {
        t.insert(last, Item::Value(v));
    }
}

fn set_str(item: &mut Item, path: &[&str], s: String) {
    set_value(item, path, Value::from(s));
}

fn set_int(item: &mut Item, path: &[&str], n: i64) {
    set_value(item, path, Value::from(n));
}

fn set_array(item: &mut Item, key: &str, values: &[String]) {
    let arr: toml_edit::Array = values.iter().map(String::as_str).collect();
    let exists = item.get(key).is_some();
    if exists || !values.is_empty() {
        set_value(item, &[key], Value::Array(arr));
    }
}

/// Give every table in the cloned subtree a position after the whole document,
/// so the new product is written as one block at the end.
fn reposition(item: &mut Item, doc: &DocumentMut) {
    fn max_pos(t: &Table, acc: &mut isize) {
        if let Some(p) = t.position() {
            *acc = (*acc).max(p);
        }
        for (_, v) in t.iter() {
            if let Item::Table(sub) = v {
                max_pos(sub, acc);
            }
        }
    }
    fn assign(item: &mut Item, next: &mut isize) {
        if let Item::Table(t) = item {
            t.set_position(Some(*next));
            *next += 1;
            for (_, v) in t.iter_mut() {
                assign(v, next);
            }
        }
    }
    let mut max = 0;
    max_pos(doc.as_table(), &mut max);
    let mut next = max + 1;
    assign(item, &mut next);
}
