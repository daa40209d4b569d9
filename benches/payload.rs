//! The `tools/call` arguments the benches send, shared by them.

use serde_json::json;

/// `{"content":"…","path":"…"}` serialized to exactly `size` bytes. The content is source code
/// with quotes, `\n` and `\t` (an escape every 30 bytes or so), because escapes, not bytes, are
/// what a JSON scanner pays for.
pub fn arguments(size: usize) -> String {
    const CODE: &str = "fn parse_record(line: &str) -> Option<(u32, String)> {\n    let (n, rest) = line.split_once(':')?;\n    Some((n.trim().parse().ok()?, rest.trim().to_string()))\n}\n\t// \"station 7\": sunny, 21 C, light wind from the north-west\n";
    let path = "/home/user/project/src/main.rs";
    let shell = json!({"content": "", "path": path}).to_string();
    assert!(size >= shell.len(), "argument size {size} is too small");
    let mut room = size - shell.len();
    let mut content = String::with_capacity(room);
    for c in CODE.chars().cycle() {
        let cost = match c {
            '"' | '\\' | '\n' | '\t' => 2,
            _ => 1,
        };
        if room == 0 {
            break;
        }
        let c = if cost > room { 'x' } else { c };
        content.push(c);
        room -= cost.min(room);
    }
    let arguments = json!({"content": content, "path": path}).to_string();
    assert_eq!(arguments.len(), size);
    arguments
}
