//! The dashboard: one server-rendered HTML page, CSS inline, the deploy timelines
//! as inline SVG, no scripts and no external assets (it works offline). It
//! reloads itself with a meta refresh and reflows to one column on a phone.

use std::fmt::Write;

use crate::state::{DeployEvent, ProductView};

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// "42s", "5m", "3h 10m", "2d 4h".
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

const CSS: &str = r#"
:root{--bg:#f5f6f8;--card:#fff;--fg:#1c2330;--mute:#5d6878;--line:#dde1e7;--up:#1a7f37;--down:#c62828;--warn:#b26a00;--unk:#6e7781}
@media (prefers-color-scheme:dark){:root{--bg:#12151a;--card:#1b2027;--fg:#e6e9ee;--mute:#9aa4b2;--line:#2c333d;--up:#3fb950;--down:#f85149;--warn:#d29922;--unk:#8b949e}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{padding:14px 18px;border-bottom:1px solid var(--line);display:flex;flex-wrap:wrap;gap:6px 18px;align-items:baseline}
header h1{font-size:18px;margin:0}
header span{color:var(--mute);font-size:13px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(320px,100%),1fr));gap:14px;padding:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;min-width:0}
.card h2{font-size:17px;margin:0 0 2px;display:flex;justify-content:space-between;gap:8px;align-items:center}
.slug{color:var(--mute);font-size:12px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
.badge{font-size:12px;font-weight:600;padding:2px 9px;border-radius:99px;color:#fff;white-space:nowrap}
.up{background:var(--up)}.down{background:var(--down)}.unknown{background:var(--unk)}
dl{display:grid;grid-template-columns:auto 1fr;gap:3px 12px;margin:10px 0 8px;font-size:14px}
dt{color:var(--mute)}dd{margin:0;overflow-wrap:anywhere}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
ul.svc{list-style:none;padding:0;margin:6px 0;font-size:13px}
ul.svc li{display:flex;justify-content:space-between;gap:8px;border-top:1px solid var(--line);padding:4px 0}
ul.svc li.task{border-top:0;padding:0 0 2px 14px;font-size:12px;color:var(--mute);font-family:ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere}
.ok{color:var(--up)}.bad{color:var(--down)}.muted{color:var(--mute)}
svg{display:block;width:100%;height:46px;margin-top:6px}
.legend{font-size:12px;color:var(--mute);display:flex;gap:12px;flex-wrap:wrap}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:4px;vertical-align:middle}
.problems{margin:14px;padding:10px 14px;border:1px solid var(--warn);border-radius:8px;color:var(--warn);font-size:13px}
"#;

const COLOR_SUCCESS: &str = "#2da44e";
const COLOR_FAILURE: &str = "#cf222e";
const COLOR_ROLLBACK: &str = "#d4a72c";

/// x of each mark (oldest first) on a 300-wide axis: by time, but never closer
/// than a mark's width to the previous one (deploys in the same second stay apart).
fn positions(events: &[&&DeployEvent], first: u64, span: f64) -> Vec<f64> {
    const LEFT: f64 = 8.0;
    const WIDTH: f64 = 284.0;
    const GAP: f64 = 12.0;
    let mut xs: Vec<f64> = Vec::with_capacity(events.len());
    for e in events {
        let by_time = LEFT + WIDTH * (e.unix.saturating_sub(first) as f64 / span);
        let x = xs.last().map_or(by_time, |prev| by_time.max(prev + GAP));
        xs.push(x);
    }
    // Pushed past the right edge: squeeze back into the axis.
    if let Some(&last) = xs.last()
        && last > LEFT + WIDTH
    {
        let k = WIDTH / (last - LEFT);
        xs.iter_mut().for_each(|x| *x = LEFT + (*x - LEFT) * k);
    }
    xs
}

/// The deploy timeline: the last `max` outcomes, oldest left, placed by time.
fn timeline(events: &[DeployEvent], now: u64) -> String {
    const MAX: usize = 40;
    let shown: Vec<&DeployEvent> = events.iter().take(MAX).collect();
    let mut s = String::from(
        r#"<svg viewBox="0 0 300 46" preserveAspectRatio="none" role="img" aria-label="deploy timeline">"#,
    );
    s.push_str(r#"<line x1="4" y1="23" x2="296" y2="23" stroke="currentColor" stroke-opacity=".25" stroke-width="1"/>"#);
    if shown.is_empty() {
        s.push_str(r#"<text x="150" y="40" font-size="10" text-anchor="middle" fill="currentColor" fill-opacity=".6">no deploys yet</text>"#);
        s.push_str("</svg>");
        return s;
    }
    let first = shown.iter().map(|e| e.unix).min().unwrap_or(now);
    let span = now.saturating_sub(first).max(1) as f64;
    let oldest_first: Vec<&&DeployEvent> = shown.iter().rev().collect();
    for (e, x) in oldest_first
        .iter()
        .zip(positions(&oldest_first, first, span))
    {
        let (color, shape) = match (e.result, e.kind) {
            ("failure", _) => (COLOR_FAILURE, "x"),
            (_, "rollback") => (COLOR_ROLLBACK, "tri"),
            _ => (COLOR_SUCCESS, "dot"),
        };
        let title = format!(
            "{} {} {} at {}{}",
            e.kind,
            e.version,
            e.result,
            e.at,
            e.failed_step
                .as_ref()
                .map(|f| format!(" (failed at {f})"))
                .unwrap_or_default()
        );
        let _ = match shape {
            "x" => write!(
                s,
                r#"<g data-kind="{k}" data-result="{res}"><title>{t}</title><path d="M{a:.1} 17 L{b:.1} 29 M{b:.1} 17 L{a:.1} 29" stroke="{color}" stroke-width="2.5"/></g>"#,
                t = esc(&title),
                a = x - 5.0,
                b = x + 5.0,
                k = e.kind,
                res = e.result
            ),
            "tri" => write!(
                s,
                r#"<g data-kind="{k}" data-result="{res}"><title>{t}</title><path d="M{x:.1} 16 L{r:.1} 29 L{l:.1} 29 Z" fill="{color}"/></g>"#,
                t = esc(&title),
                r = x + 6.0,
                l = x - 6.0,
                k = e.kind,
                res = e.result
            ),
            _ => write!(
                s,
                r#"<g data-kind="{k}" data-result="{res}"><title>{t}</title><circle cx="{x:.1}" cy="23" r="5" fill="{color}"/></g>"#,
                t = esc(&title),
                k = e.kind,
                res = e.result
            ),
        };
    }
    let _ = write!(
        s,
        r#"<text x="4" y="44" font-size="9" fill="currentColor" fill-opacity=".6">{} ago</text><text x="296" y="44" font-size="9" text-anchor="end" fill="currentColor" fill-opacity=".6">now</text></svg>"#,
        esc(&age(now.saturating_sub(first)))
    );
    s
}

fn card(p: &ProductView, events: &[DeployEvent], now: u64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<section class="card" data-product="{name}" data-health="{health}" data-version="{version}"><h2><span>{title}</span><span class="badge {health}">{health_text}</span></h2><div class="slug">{name}</div><dl>"#,
        name = esc(&p.name),
        title = esc(&p.display_name),
        health = p.health,
        version = esc(p.live_version.as_deref().unwrap_or("")),
        health_text = match p.health {
            "up" => "up",
            "down" => "down",
            _ if !p.deployed => "not deployed",
            _ => "unknown",
        },
    );
    let live = match (&p.live_version, p.live_slot) {
        (Some(v), Some(slot)) => format!(
            r#"<code class="version">{}</code> <span class="muted">({slot})</span>"#,
            esc(v)
        ),
        _ => r#"<span class="muted">not deployed</span>"#.to_string(),
    };
    let _ = write!(s, "<dt>Live</dt><dd>{live}</dd>");
    if let Some(sb) = &p.standby {
        let _ = write!(
            s,
            r#"<dt>Standby</dt><dd class="standby"><code class="version">{}</code> <span class="muted">({}, no traffic)</span> {} until {}</dd>"#,
            esc(&sb.version),
            sb.slot,
            if sb.alive {
                "warm"
            } else {
                "<strong>died</strong>"
            },
            esc(&sb.until())
        );
    }
    let deploy = match &p.last_deploy {
        Some(d) => format!(
            r#"{} ago by {}{}<br><span class="muted">{}{}</span>"#,
            esc(&age(now.saturating_sub(d.unix))),
            esc(d.operator.as_deref().unwrap_or("unknown")),
            d.rollback_of
                .as_ref()
                .map(|_| " (rollback)".to_string())
                .unwrap_or_default(),
            if d.tasks.is_empty() {
                "no tasks".to_string()
            } else {
                esc(&d.tasks.join(", "))
            },
            ""
        ),
        None => r#"<span class="muted">never</span>"#.into(),
    };
    let _ = write!(s, "<dt>Last deploy</dt><dd>{deploy}</dd>");
    let backup = match &p.last_backup {
        Some(b) => format!(
            "{} ago <span class=\"muted\">({})</span>",
            esc(&age(now.saturating_sub(b.finished_unix))),
            esc(&berth_backup::human_bytes(b.file_bytes))
        ),
        None => r#"<span class="muted">none</span>"#.into(),
    };
    let _ = write!(s, "<dt>Last backup</dt><dd>{backup}</dd>");
    if let Some(o) = p.last_backup.as_ref().and_then(|b| b.offsite.as_ref()) {
        let copy = if o.ok {
            format!(
                r#"<span class="ok">ok</span> {} ago"#,
                esc(&age(now.saturating_sub(o.at_unix)))
            )
        } else {
            format!(
                r#"<span class="bad">FAILED</span> {} ago <span class="muted">({})</span>"#,
                esc(&age(now.saturating_sub(o.at_unix))),
                esc(o.error.as_deref().unwrap_or(""))
            )
        };
        let _ = write!(s, "<dt>Last off-site copy</dt><dd>{copy}</dd>");
    }
    if let Some(t) = &p.tls {
        let class = match t.health {
            "ok" | "renewal-due" => "ok",
            _ => "bad",
        };
        let cert = match (&t.certificate, t.days_left) {
            (Some(c), Some(d)) => format!(
                r#"<span class="{class}">{d} days left</span> <span class="muted">({}, {})</span>"#,
                esc(&berth_tls::rfc3339(c.not_after)),
                esc(t.mode)
            ),
            _ => format!(
                r#"<span class="bad">no certificate</span> <span class="muted">({})</span>"#,
                esc(t.mode)
            ),
        };
        let err = t
            .last_error
            .as_ref()
            .map(|e| {
                format!(
                    r#"<br><span class="bad">last attempt failed: {}</span>"#,
                    esc(e)
                )
            })
            .unwrap_or_default();
        let _ = write!(
            s,
            r#"<dt>TLS</dt><dd data-tls="{}">{cert}{err}</dd>"#,
            t.health
        );
    }
    let _ = write!(
        s,
        r#"<dt>Deploys</dt><dd>{} ok, {} failed, {} rollbacks</dd></dl><ul class="svc">"#,
        p.deploys.success, p.deploys.failure, p.deploys.rollbacks
    );
    for svc in &p.services {
        let h = match (&svc.health_path, &svc.health) {
            (None, _) => r#"<span class="muted">no health check</span>"#.to_string(),
            (Some(_), None) => r#"<span class="muted">not probed</span>"#.to_string(),
            (Some(_), Some(h)) if h.status == "up" => {
                format!(r#"<span class="ok">up</span> {} ms"#, h.latency_ms)
            }
            (Some(_), Some(h)) => format!(
                r#"<span class="bad">down</span> {} ms <span class="muted">{}</span>"#,
                h.latency_ms,
                esc(h.detail.as_deref().unwrap_or(""))
            ),
        };
        let usage = svc.usage.map(|u| {
            let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
            let mem = match (u.memory_bytes, u.memory_limit_bytes) {
                (Some(m), Some(l)) => format!("{} of {}", mib(m), mib(l)),
                (None, Some(l)) => format!("limit {}", mib(l)),
                (Some(m), None) => mib(m),
                (None, None) => "-".into(),
            };
            let mut cpu = match (u.cpus, u.cpus_limit) {
                (Some(c), Some(l)) => format!(", CPU {c:.2} of {l}"),
                (Some(c), None) => format!(", CPU {c:.2}"),
                _ => String::new(),
            };
            if u.background == Some(true) {
                cpu.push_str(" (background)");
            }
            format!(r#" <span class="muted" data-usage>memory {mem}{cpu}</span>"#)
        });
        let _ = write!(
            s,
            r#"<li data-service="{n}"><span>{n}</span><span>{h}{u}</span></li>"#,
            n = esc(&svc.name),
            u = usage.unwrap_or_default()
        );
        // Each instance of the live slot: where it runs and answers, and its own health.
        for t in &svc.tasks {
            let place = match (&t.node, &t.address) {
                (Some(n), Some(a)) if !a.starts_with(&format!("{n}:")) => {
                    format!("on {} at {}", esc(n), esc(a))
                }
                (Some(n), _) => format!("on {}", esc(n)),
                (None, Some(a)) => format!("at {}", esc(a)),
                (None, None) => String::new(),
            };
            let state = t
                .state
                .clone()
                .unwrap_or_else(|| if t.running { "running" } else { "stopped" }.into());
            let health = match t.health {
                Some("up") => r#" · <span class="ok">up</span>"#,
                Some(_) => r#" · <span class="bad">down</span>"#,
                None => "",
            };
            let _ = write!(
                s,
                r#"<li class="task" data-task="{id}" data-node="{node}" data-health="{h}"><span>{id} {place}</span><span>{state}{health}</span></li>"#,
                id = esc(&t.id),
                node = esc(t.node.as_deref().unwrap_or("")),
                h = t.health.unwrap_or("unknown"),
                state = esc(&state),
            );
        }
    }
    s.push_str("</ul>");
    s.push_str(&timeline(events, now));
    s.push_str("</section>");
    s
}

/// The whole page.
pub fn render(
    project: &str,
    products: &[(ProductView, Vec<DeployEvent>)],
    problems: &[String],
    refresh_secs: u64,
    now: u64,
) -> String {
    let up = products.iter().filter(|(p, _)| p.health == "up").count();
    let down = products.iter().filter(|(p, _)| p.health == "down").count();
    let mut s = String::with_capacity(8 * 1024 + products.len() * 2048);
    let _ = write!(
        s,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta http-equiv="refresh" content="{refresh_secs}"><link rel="icon" href="data:,"><title>{t} · berth</title><style>{CSS}</style></head><body><header><h1>{t}</h1><span>{n} products · {up} up · {down} down</span><span>updated {at} · refreshes every {refresh_secs}s</span></header>"#,
        t = esc(project),
        n = products.len(),
        at = berth_deploy::tags::utc_stamp(now).1,
    );
    if !problems.is_empty() {
        s.push_str(r#"<div class="problems">"#);
        for p in problems {
            let _ = write!(s, "<div>{}</div>", esc(p));
        }
        s.push_str("</div>");
    }
    s.push_str("<main>");
    for (p, events) in products {
        s.push_str(&card(p, events, now));
    }
    let _ = write!(
        s,
        r#"</main><footer class="legend" style="padding:0 18px 18px"><span><span class="dot" style="background:{COLOR_SUCCESS}"></span>deploy</span><span><span class="dot" style="background:{COLOR_ROLLBACK}"></span>rollback</span><span><span class="dot" style="background:{COLOR_FAILURE}"></span>failed</span><span>· JSON: <a href="api/products">/api/products</a> · <a href="metrics">/metrics</a></span></footer></body></html>"#
    );
    s
}

/// The sign-in form shown instead of the page when a token is required.
pub fn sign_in(project: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,"><title>{t} · berth</title><style>{CSS}form{{max-width:360px;margin:40px auto;display:grid;gap:10px;padding:18px}}input,button{{font:inherit;padding:8px 10px;border-radius:6px;border:1px solid var(--line)}}</style></head><body><form class="card" method="post" action="login"><h2>{t}</h2><label for="token">This dashboard needs its access token.</label><input id="token" name="token" type="password" autocomplete="current-password" required><button type="submit">Sign in</button></form></body></html>"#,
        t = esc(project)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(unix: u64) -> DeployEvent {
        DeployEvent {
            at: String::new(),
            unix,
            result: "success",
            kind: "deploy",
            version: "v".into(),
            tag: None,
            operator: "o".into(),
            tasks: vec![],
            duration_ms: 0,
            rollback_of: None,
            failed_step: None,
        }
    }

    #[test]
    fn timeline_marks_in_one_second_stay_apart_and_inside() {
        let evs: Vec<DeployEvent> = [100, 100, 100, 200].map(event).to_vec();
        let refs: Vec<&DeployEvent> = evs.iter().collect();
        let rr: Vec<&&DeployEvent> = refs.iter().collect();
        let xs = positions(&rr, 100, 100.0);
        assert_eq!(xs[0], 8.0);
        assert!(xs.windows(2).all(|w| w[1] - w[0] >= 11.9), "{xs:?}");
        assert!(*xs.last().unwrap() <= 292.0);
        let many: Vec<DeployEvent> = (0..40).map(|_| event(5)).collect();
        let refs: Vec<&DeployEvent> = many.iter().collect();
        let rr: Vec<&&DeployEvent> = refs.iter().collect();
        let xs = positions(&rr, 5, 1.0);
        assert!((xs.last().unwrap() - 292.0).abs() < 1e-9, "{xs:?}");
    }

    #[test]
    fn escaping_and_ages() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(age(5), "5s");
        assert_eq!(age(3700), "1h 1m");
        assert_eq!(age(90_000), "1d 1h");
        assert_eq!(berth_backup::human_bytes(2048), "2.0 KiB");
    }
}
