//! `regex_binding2` rules: `vip1[,vip2] = field =~ 'regex' AND field ==
//! 'text'` (or `group:NAME = ...`), parsed at load and matched against a
//! message's fields at assignment.
//!
//! Owns the rule grammar, its parse errors (with the column) and the
//! match. May call: the `regex` crate. Must never: do I/O, or read more
//! of a message than the fields a rule names (the caller supplies them).
//!
//! Grammar (`AND` binds tighter than `OR`; words are case-insensitive):
//!
//! ```text
//! rule   := targets '=' expr
//! targets:= name (',' name)* | 'group:' name
//! expr   := term ('OR' term)*
//! term   := factor ('AND' factor)*
//! factor := '(' expr ')' | 'NOT' factor | field op literal
//! field  := mailfrom | rcptto | header:NAME | recv_ip | recv_port | sender_ip
//! op     := '=~' | '!~' | '==' | '!='
//! literal:= 'single-quoted' | "double-quoted"   (\' and \\ escape)
//! ```

use std::fmt;

use regex::Regex;

/// Largest compiled regex (bytes of program): a rule is checked per
/// message, so a pathological one is refused at load.
const MAX_REGEX_BYTES: usize = 1 << 20;
/// Deepest nesting of parentheses and NOTs.
const MAX_DEPTH: usize = 32;

/// A message field a rule can test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// The envelope sender.
    MailFrom,
    /// Any envelope recipient.
    RcptTo,
    /// The first header field of this name (unfolded, trimmed).
    Header(String),
    /// The address the message was received on.
    RecvIp,
    /// The port it was received on.
    RecvPort,
    /// The client's address.
    SenderIp,
}

/// How a field is compared.
#[derive(Clone, Debug)]
enum Test {
    Matches(Regex),
    Equals(String),
}

/// A rule's condition.
#[derive(Clone, Debug)]
pub enum Expr {
    /// `field op literal`; `negate` for `!~` and `!=`.
    Cmp {
        /// The field.
        field: Field,
        /// The comparison.
        test: Box<TestBox>,
        /// `!~` or `!=`.
        negate: bool,
    },
    /// Both hold.
    And(Box<Expr>, Box<Expr>),
    /// Either holds.
    Or(Box<Expr>, Box<Expr>),
    /// It does not hold.
    Not(Box<Expr>),
}

/// A comparison (kept opaque so the regex type stays private).
#[derive(Clone, Debug)]
pub struct TestBox(Test);

/// What a rule assigns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleTarget {
    /// One of these bindings, in turn.
    Bindings(Vec<String>),
    /// A member of this group.
    Group(String),
}

/// One parsed rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// What it assigns.
    pub target: RuleTarget,
    /// When it applies.
    pub expr: Expr,
}

/// Why a rule does not parse: the message and the 0-based character
/// column in the rule's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// What is wrong.
    pub message: String,
    /// Where, in characters from the start of the rule.
    pub column: usize,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.column + 1)
    }
}

/// The values of a message's fields, as the caller knows them.
pub trait Fields {
    /// The envelope sender (empty for the null sender).
    fn mail_from(&self) -> &str;
    /// The envelope recipients.
    fn rcpt_to(&self) -> &[&str];
    /// The first header field of this name, unfolded.
    fn header(&self, name: &str) -> Option<String>;
    /// Where the message came in, as text, if known.
    fn recv_ip(&self) -> Option<String>;
    /// The port it came in on, as text, if known.
    fn recv_port(&self) -> Option<String>;
    /// The client's address, as text, if known.
    fn sender_ip(&self) -> Option<String>;
}

impl Rule {
    /// Parses one rule.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let eq = find_assign(text).ok_or(RuleError {
            message: "expected `bindings = condition`".into(),
            column: 0,
        })?;
        let target = parse_targets(&text[..eq])?;
        let mut p = Parser {
            src: text,
            pos: eq + 1,
            depth: 0,
        };
        let expr = p.expr()?;
        p.skip_ws();
        if p.pos < text.len() {
            return Err(p.err("unexpected text after the condition"));
        }
        Ok(Rule { target, expr })
    }

    /// True when the rule applies to this message.
    pub fn matches(&self, fields: &dyn Fields) -> bool {
        self.expr.eval(fields)
    }

    /// True when the rule reads a header field (the caller then parses
    /// the header section).
    pub fn reads_headers(&self) -> bool {
        self.expr.reads_headers()
    }
}

impl Expr {
    fn eval(&self, f: &dyn Fields) -> bool {
        match self {
            Expr::And(a, b) => a.eval(f) && b.eval(f),
            Expr::Or(a, b) => a.eval(f) || b.eval(f),
            Expr::Not(a) => !a.eval(f),
            Expr::Cmp {
                field,
                test,
                negate,
            } => {
                let hit = |v: &str| match &test.0 {
                    Test::Matches(re) => re.is_match(v),
                    Test::Equals(s) => v.eq_ignore_ascii_case(s),
                };
                let found = match field {
                    Field::MailFrom => hit(f.mail_from()),
                    Field::RcptTo => f.rcpt_to().iter().any(|r| hit(r)),
                    Field::Header(n) => f.header(n).is_some_and(|v| hit(&v)),
                    Field::RecvIp => f.recv_ip().is_some_and(|v| hit(&v)),
                    Field::RecvPort => f.recv_port().is_some_and(|v| hit(&v)),
                    Field::SenderIp => f.sender_ip().is_some_and(|v| hit(&v)),
                };
                found != *negate
            }
        }
    }

    fn reads_headers(&self) -> bool {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => a.reads_headers() || b.reads_headers(),
            Expr::Not(a) => a.reads_headers(),
            Expr::Cmp { field, .. } => matches!(field, Field::Header(_)),
        }
    }
}

/// The first `=` that is not part of `==`, `=~` or `!=`/`!~`, outside quotes.
fn find_assign(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'\'' || b[i] == b'"' {
            return None;
        }
        if b[i] == b'=' {
            let next = b.get(i + 1).copied();
            let prev = i.checked_sub(1).map(|j| b[j]);
            if next != Some(b'=') && next != Some(b'~') && prev != Some(b'!') {
                return Some(i);
            }
            return None;
        }
    }
    None
}

fn parse_targets(lhs: &str) -> Result<RuleTarget, RuleError> {
    let err = |m: &str| RuleError {
        message: m.into(),
        column: 0,
    };
    let lhs = lhs.trim();
    if let Some(g) = lhs.strip_prefix("group:") {
        let g = g.trim();
        if !super::parse::valid_binding_name(g) {
            return Err(err("`group:` needs a binding group name"));
        }
        return Ok(RuleTarget::Group(g.into()));
    }
    let names: Vec<String> = lhs.split(',').map(|n| n.trim().to_string()).collect();
    if names.iter().any(|n| !super::parse::valid_binding_name(n)) {
        return Err(err(
            "the left side is a binding name, several separated by commas, or group:NAME",
        ));
    }
    Ok(RuleTarget::Bindings(names))
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> RuleError {
        RuleError {
            message: message.into(),
            column: self.src[..self.pos.min(self.src.len())].chars().count(),
        }
    }

    fn skip_ws(&mut self) {
        while self.src[self.pos..].starts_with(|c: char| c.is_whitespace()) {
            self.pos += self.src[self.pos..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
        }
    }

    /// Consumes `word` (case-insensitive, followed by a non-word byte).
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_ws();
        let rest = &self.src[self.pos..];
        let n = word.len();
        let ends = rest
            .as_bytes()
            .get(n)
            .is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'_');
        if rest.len() >= n && rest.as_bytes()[..n].eq_ignore_ascii_case(word.as_bytes()) && ends {
            self.pos += n;
            return true;
        }
        false
    }

    fn expr(&mut self) -> Result<Expr, RuleError> {
        let mut left = self.term()?;
        while self.keyword("or") {
            let right = self.term()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, RuleError> {
        let mut left = self.factor()?;
        while self.keyword("and") {
            let right = self.factor()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Expr, RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("the condition nests too deeply"));
        }
        let out = self.factor_inner();
        self.depth -= 1;
        out
    }

    fn factor_inner(&mut self) -> Result<Expr, RuleError> {
        self.skip_ws();
        if self.src[self.pos..].starts_with('(') {
            self.pos += 1;
            let e = self.expr()?;
            self.skip_ws();
            if !self.src[self.pos..].starts_with(')') {
                return Err(self.err("expected `)`"));
            }
            self.pos += 1;
            return Ok(e);
        }
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.factor()?)));
        }
        let field = self.field()?;
        self.skip_ws();
        let rest = &self.src[self.pos..];
        let (op, negate) = ["=~", "!~", "==", "!="]
            .iter()
            .find(|op| rest.starts_with(**op))
            .map(|op| (*op, op.starts_with('!')))
            .ok_or_else(|| self.err("expected =~, !~, == or !="))?;
        self.pos += op.len();
        let lit = self.literal()?;
        let test = if op.ends_with('~') {
            let re = regex::RegexBuilder::new(&lit)
                .case_insensitive(true)
                .size_limit(MAX_REGEX_BYTES)
                .build()
                .map_err(|e| self.err(&format!("bad regex: {e}")))?;
            Test::Matches(re)
        } else {
            Test::Equals(lit)
        };
        Ok(Expr::Cmp {
            field,
            test: Box::new(TestBox(test)),
            negate,
        })
    }

    fn field(&mut self) -> Result<Field, RuleError> {
        self.skip_ws();
        let start = self.pos;
        let rest = &self.src[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-'))
            .unwrap_or(rest.len());
        let word = &rest[..len];
        let lower = word.to_ascii_lowercase();
        let field = match lower.as_str() {
            "mailfrom" => Field::MailFrom,
            "rcptto" => Field::RcptTo,
            "recv_ip" => Field::RecvIp,
            "recv_port" => Field::RecvPort,
            "sender_ip" => Field::SenderIp,
            "body" => {
                return Err(self.err(
                    "`body` is not a field here: assignment does not read message bodies",
                ))
            }
            w if w.starts_with("header:") && w.len() > "header:".len() => {
                Field::Header(word["header:".len()..].to_string())
            }
            "" => return Err(self.err("expected a field")),
            _ => {
                return Err(self.err(&format!(
                    "unknown field `{word}` (fields: mailfrom, rcptto, header:NAME, recv_ip, recv_port, sender_ip)"
                )))
            }
        };
        self.pos = start + len;
        Ok(field)
    }

    fn literal(&mut self) -> Result<String, RuleError> {
        self.skip_ws();
        let quote = match self.src[self.pos..].chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.err("expected a quoted string")),
        };
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.src[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) if e == quote || e == '\\' => out.push(e),
                    Some((_, e)) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => break,
                },
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        self.pos = start;
        Err(self.err("the string is not closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Msg {
        from: &'static str,
        to: Vec<&'static str>,
        port: u16,
    }

    impl Fields for Msg {
        fn mail_from(&self) -> &str {
            self.from
        }
        fn rcpt_to(&self) -> &[&str] {
            &self.to
        }
        fn header(&self, name: &str) -> Option<String> {
            name.eq_ignore_ascii_case("x-campaign")
                .then(|| "spring sale".to_string())
        }
        fn recv_ip(&self) -> Option<String> {
            Some("127.0.0.1".into())
        }
        fn recv_port(&self) -> Option<String> {
            Some(self.port.to_string())
        }
        fn sender_ip(&self) -> Option<String> {
            None
        }
    }

    fn msg() -> Msg {
        Msg {
            from: "news@shop.example",
            to: vec!["a@gmail.test", "b@yahoo.test"],
            port: 2525,
        }
    }

    #[test]
    fn targets_and_precedence() {
        let r = Rule::parse("vip1, vip2 = mailfrom =~ '@shop[.]example$' AND rcptto == 'b@YAHOO.test' OR recv_port == '1'").unwrap();
        assert_eq!(
            r.target,
            RuleTarget::Bindings(vec!["vip1".into(), "vip2".into()])
        );
        assert!(r.matches(&msg()));
        let r = Rule::parse(
            "group:pool = recv_port == '1' OR (mailfrom =~ 'nomatch' AND recv_port == '2525')",
        )
        .unwrap();
        assert_eq!(r.target, RuleTarget::Group("pool".into()));
        assert!(!r.matches(&msg()));
        let r = Rule::parse("a = NOT sender_ip =~ '.' and header:X-Campaign =~ '^spring'").unwrap();
        assert!(r.reads_headers());
        assert!(r.matches(&msg()), "an absent field matches nothing");
        let r = Rule::parse(r#"a = mailfrom != "news@shop.example""#).unwrap();
        assert!(!r.matches(&msg()));
        let r = Rule::parse(r"a = header:x-campaign =~ 'spring\ sale'").unwrap();
        assert!(r.matches(&msg()));
    }

    #[test]
    fn errors_say_where() {
        let e = Rule::parse("a = mailfrom ~= 'x'").unwrap_err();
        assert_eq!(e.column, 13, "{e}");
        let e = Rule::parse("a = subject =~ 'x'").unwrap_err();
        assert!(e.message.contains("unknown field `subject`"), "{e}");
        let e = Rule::parse("a = mailfrom =~ '('").unwrap_err();
        assert!(e.message.contains("bad regex"), "{e}");
        let e = Rule::parse("a = mailfrom == 'x").unwrap_err();
        assert!(e.message.contains("not closed"), "{e}");
        let e = Rule::parse("a = (mailfrom == 'x'").unwrap_err();
        assert!(e.message.contains("expected `)`"), "{e}");
        let e = Rule::parse("a = mailfrom == 'x' junk").unwrap_err();
        assert!(e.message.contains("after the condition"), "{e}");
        assert!(Rule::parse("mailfrom == 'x'").is_err());
        assert!(Rule::parse("bad name = mailfrom == 'x'").is_err());
        assert!(Rule::parse("a = body =~ 'x'").is_err());
        let deep = format!("a = {}mailfrom == 'x'{}", "(".repeat(40), ")".repeat(40));
        assert!(Rule::parse(&deep).unwrap_err().message.contains("deeply"));
        let nots = format!("a = {}mailfrom == 'x'", "NOT ".repeat(40));
        assert!(Rule::parse(&nots).is_err());
    }
}
