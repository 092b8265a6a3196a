//! The budget of a render: loop iterations, bytes of text, CPU time.
//!
//! Hand-written because liquid offers no limits and no hooks for them: a
//! template of nested loops or of a string doubled by `append` renders
//! until the CPU or the memory runs out. So the parser's loops (`for`,
//! `tablerow`) charge their length to the budget before they start (a
//! range is never built past it), every filter's result and every buffer a
//! render writes (the field, `capture`, `ifchanged`) stays under the byte
//! limit, and each of these steps checks the CPU time. The budget lives in
//! a thread-local for the length of one field's render ([`bounded`]): a
//! render runs on one thread, and liquid's own runtime is not reachable
//! from here.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::time::{Duration, Instant};

use liquid_core::model::{KString, ValueView};
use liquid_core::parser::{FilterArguments, Tag};
use liquid_core::runtime::Registers;
use liquid_core::{
    BlockReflection, Error, Expression, Filter, FilterReflection, Language, ParseBlock,
    ParseFilter, Renderable, Result, Runtime, TagBlock, TagTokenIter, Template, Value,
};
use liquid_lib::stdlib::{Range, RangeExpression};

/// What one render may spend.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Loop iterations per field, nested loops' included.
    pub max_iterations: u64,
    /// Bytes of a field's text, and of any value a filter, `capture` or
    /// `ifchanged` makes on the way (unless no larger than its input).
    pub max_output_bytes: usize,
    /// CPU time of the whole push's render.
    pub max_render_cpu: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_iterations: 10_000,
            max_output_bytes: 16 * 1024,
            max_render_cpu: Duration::from_millis(100),
        }
    }
}

/// The budget of the field being rendered on this thread.
struct Budget {
    limits: Limits,
    iterations: u64,
    /// When the push's render started.
    since: Instant,
    /// The thread's CPU clock as first read during the push's render.
    cpu: Option<Duration>,
    /// The wall time since `since` at which to read the CPU clock next.
    next_look: Duration,
    /// The limit exceeded, in words; kept, since liquid wraps errors.
    exceeded: Option<String>,
}

/// How many times within its CPU time limit a long render reads the CPU
/// clock.
const LOOKS: u32 = 16;

thread_local! {
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// When a push's render started, and this thread's CPU clock as first
/// read during it (the fields of one push share its CPU time limit).
#[derive(Debug)]
pub struct Started {
    wall: Instant,
    cpu: Cell<Option<Duration>>,
}

impl Started {
    /// Now, on this thread.
    pub fn now() -> Self {
        Started {
            wall: Instant::now(),
            cpu: Cell::new(None),
        }
    }
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `render` (one field's) under `limits`, its CPU time counted from
/// `since`; answers what it answered and the limit it exceeded, in words,
/// if it did.
pub fn bounded<T>(
    limits: &Limits,
    since: &Started,
    render: impl FnOnce() -> T,
) -> (T, Option<String>) {
    BUDGET.set(Some(Budget {
        limits: limits.clone(),
        iterations: 0,
        since: since.wall,
        cpu: since.cpu.get(),
        next_look: limits.max_render_cpu / LOOKS,
        exceeded: None,
    }));
    let out = render();
    let budget = BUDGET.take();
    since.cpu.set(budget.as_ref().and_then(|b| b.cpu));
    (out, budget.and_then(|b| b.exceeded))
}

/// Applies `check` to the budget (none outside [`bounded`]), then checks
/// the CPU time; a limit exceeded stays exceeded for the rest of the field.
fn charge(check: impl FnOnce(&mut Budget) -> Option<String>) -> Result<()> {
    BUDGET.with_borrow_mut(|budget| {
        let Some(b) = budget else { return Ok(()) };
        let over = (b.exceeded.clone())
            .or_else(|| check(b))
            .or_else(|| b.out_of_time());
        match over {
            None => Ok(()),
            Some(words) => {
                b.exceeded = Some(words.clone());
                Err(Error::with_msg(words))
            }
        }
    })
}

impl Budget {
    fn iterations(&mut self, n: u64) -> Option<String> {
        let max = self.limits.max_iterations;
        self.iterations = self.iterations.saturating_add(n);
        (self.iterations > max)
            .then(|| format!("its loops run more than {max} iterations (max_iterations {max})"))
    }

    /// Whether `bytes` of text are too many, for a value made from `input`
    /// bytes (a value no larger than its input is let through).
    fn bytes(&self, bytes: usize, input: usize) -> Option<String> {
        let max = self.limits.max_output_bytes;
        (bytes > max && bytes > input)
            .then(|| format!("it makes more than {max} bytes of text (max_output_bytes {max})"))
    }

    /// Whether the push's render has used more than `max_render_cpu` of
    /// this thread's CPU time. A thread cannot use more CPU time than wall
    /// time passes, so the CPU clock (a system call, where `Instant` reads
    /// the vDSO) is read only every `max / LOOKS` of wall time, from the
    /// first such moment on: an ordinary render, done in microseconds,
    /// never reads it. The CPU time before the first reading is not
    /// counted, so a render is stopped at most `2 max / LOOKS` past its
    /// limit, and never before it.
    fn out_of_time(&mut self) -> Option<String> {
        let max = self.limits.max_render_cpu;
        let elapsed = self.since.elapsed();
        if elapsed < self.next_look {
            return None;
        }
        self.next_look = elapsed + max / LOOKS;
        let now = thread_cpu();
        let first = *self.cpu.get_or_insert(now);
        let ms = max.as_millis();
        (now.saturating_sub(first) > max)
            .then(|| format!("it takes more than {ms} ms of CPU time (max_render_cpu_ms {ms})"))
    }
}

/// Text written under the byte limit.
#[derive(Default)]
pub struct Bounded(pub Vec<u8>);

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        charge(|b| b.bytes(self.0.len() + buf.len(), 0)).map_err(std::io::Error::other)?;
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A value's size as text: a scalar's length, a collection's items' plus
/// one each (so a list of empty strings still counts).
fn size(v: &dyn ValueView) -> usize {
    if let Some(items) = v.as_array() {
        items.values().map(|v| size(v) + 1).sum()
    } else if let Some(map) = v.as_object() {
        map.iter().map(|(k, v)| k.len() + size(v) + 1).sum()
    } else {
        v.to_kstr().len()
    }
}

/// A loop block (`for`, `tablerow`) that charges its length to the budget
/// before the standard library's runs it.
#[derive(Clone)]
pub struct Loop<B>(pub B);

impl<B: ParseBlock + Clone + 'static> ParseBlock for Loop<B> {
    fn parse(
        &self,
        arguments: TagTokenIter<'_>,
        block: TagBlock<'_, '_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        // The header is read twice, here and by the standard block: its
        // tokens are taken as text and parsed again for it.
        let words: Vec<String> = arguments.map(|t| t.as_str().to_owned()).collect();
        let tag = format!(
            "{{% {} {} %}}",
            self.reflection().start_tag(),
            words.join(" ")
        );
        let inner = self
            .0
            .parse(Tag::new(&tag)?.into_tokens(), block, options)?;
        // `limit: n` and `offset: n` follow the variable, `in` and the range.
        let after = |key: &str| {
            let at = 3 + words.iter().skip(3).position(|w| w == key)?;
            value(words.get(at + 2)?)
        };
        Ok(Box::new(Counted {
            range: words.get(2).and_then(|w| range(w)),
            limit: after("limit"),
            offset: after("offset"),
            inner,
        }))
    }

    fn reflection(&self) -> &dyn BlockReflection {
        self.0.reflection()
    }
}

/// One tag token of `word`, handed to `read`.
fn token<T>(
    word: &str,
    read: impl FnOnce(liquid_core::parser::TagToken<'_>) -> Option<T>,
) -> Option<T> {
    let tag = format!("{{% x {word} %}}");
    read(Tag::new(&tag).ok()?.into_tokens().next()?)
}

fn value(word: &str) -> Option<Expression> {
    token(word, |t| t.expect_value().into_result().ok())
}

fn range(word: &str) -> Option<RangeExpression> {
    token(word, |t| match t.expect_value() {
        liquid_core::parser::TryMatchToken::Matches(e) => Some(RangeExpression::Array(e)),
        liquid_core::parser::TryMatchToken::Fails(t) => {
            let (start, stop) = t.expect_range().into_result().ok()?;
            Some(RangeExpression::Counted(start, stop))
        }
    })
}

#[derive(Debug)]
struct Counted {
    range: Option<RangeExpression>,
    limit: Option<Expression>,
    offset: Option<Expression>,
    inner: Box<dyn Renderable>,
}

impl Counted {
    /// The iterations the loop will run, or for a range the numbers in it
    /// (the standard block makes them all before `limit` and `offset`
    /// take some); `None` where its header does not evaluate (the standard
    /// block then reports why).
    fn length(&self, runtime: &dyn Runtime) -> Option<u64> {
        let int = |e: &Expression| e.evaluate(runtime).ok()?.as_scalar()?.to_integer();
        let items = match self.range.as_ref()?.evaluate(runtime).ok()? {
            Range::Counted(start, stop) => {
                return Some(stop.saturating_sub(start).saturating_add(1).max(0) as u64);
            }
            Range::Array(v) => match (v.as_array(), v.as_object()) {
                (Some(items), _) => items.size() as u64,
                (_, Some(map)) => map.size() as u64,
                _ => u64::from(!v.is_nil()),
            },
        };
        let offset = self.offset.as_ref().and_then(int).unwrap_or(0).max(0) as u64;
        let left = items.saturating_sub(offset);
        Some(match self.limit.as_ref().and_then(int) {
            Some(limit) => left.min(limit.max(0) as u64),
            None => left,
        })
    }
}

impl Renderable for Counted {
    fn render_to(&self, writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        if let Some(n) = self.length(runtime) {
            charge(|b| b.iterations(n))?;
        }
        self.inner.render_to(writer, runtime)
    }
}

/// `capture`, as the standard library's, into a buffer under the limit.
#[derive(Clone, Copy)]
pub struct Capture;

/// `ifchanged`, as the standard library's, into a buffer under the limit.
#[derive(Clone, Copy)]
pub struct IfChanged;

impl BlockReflection for Capture {
    fn start_tag(&self) -> &str {
        "capture"
    }

    fn end_tag(&self) -> &str {
        "endcapture"
    }

    fn description(&self) -> &str {
        "Renders its content into a variable."
    }
}

impl BlockReflection for IfChanged {
    fn start_tag(&self) -> &str {
        "ifchanged"
    }

    fn end_tag(&self) -> &str {
        "endifchanged"
    }

    fn description(&self) -> &str {
        "Renders its content unless it is the same as last time."
    }
}

/// The content of a block without arguments but `names` (0 or 1).
fn body(
    mut arguments: TagTokenIter<'_>,
    mut block: TagBlock<'_, '_>,
    options: &Language,
    named: bool,
) -> Result<(Option<KString>, Template)> {
    let name = match named {
        true => Some(KString::from_ref(
            arguments
                .expect_next("Identifier expected")?
                .expect_identifier()
                .into_result()?,
        )),
        false => None,
    };
    arguments.expect_nothing()?;
    let template = Template::new(block.parse_all(options)?);
    block.assert_empty();
    Ok((name, template))
}

/// Renders `template` into a bounded buffer.
fn rendered(template: &Template, runtime: &dyn Runtime) -> Result<String> {
    let mut out = Bounded::default();
    template.render_to(&mut out, runtime)?;
    String::from_utf8(out.0).map_err(|e| Error::with_msg(e.to_string()))
}

impl ParseBlock for Capture {
    fn parse(
        &self,
        arguments: TagTokenIter<'_>,
        block: TagBlock<'_, '_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let (name, template) = body(arguments, block, options, true)?;
        Ok(Box::new(Captured {
            name: name.unwrap_or_default(),
            template,
        }))
    }

    fn reflection(&self) -> &dyn BlockReflection {
        self
    }
}

impl ParseBlock for IfChanged {
    fn parse(
        &self,
        arguments: TagTokenIter<'_>,
        block: TagBlock<'_, '_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let (_, template) = body(arguments, block, options, false)?;
        Ok(Box::new(Changed(template)))
    }

    fn reflection(&self) -> &dyn BlockReflection {
        self
    }
}

#[derive(Debug)]
struct Captured {
    name: KString,
    template: Template,
}

impl Renderable for Captured {
    fn render_to(&self, _: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        let text = rendered(&self.template, runtime)?;
        runtime.set_global(self.name.clone(), Value::scalar(text));
        Ok(())
    }
}

#[derive(Debug)]
struct Changed(Template);

/// What the last `ifchanged` of a render rendered.
#[derive(Default)]
struct LastChanged(Option<String>);

impl Renderable for Changed {
    fn render_to(&self, writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        let text = rendered(&self.0, runtime)?;
        let registers: &Registers = runtime.registers();
        let mut last = registers.get_mut::<LastChanged>();
        if last.0.as_deref() != Some(text.as_str()) {
            writer
                .write_all(text.as_bytes())
                .map_err(|e| Error::with_msg(e.to_string()))?;
            last.0 = Some(text);
        }
        Ok(())
    }
}

/// A standard filter whose result is held under the byte limit.
#[derive(Clone)]
pub struct Held<F>(pub F);

impl<F: ParseFilter + Clone + 'static> ParseFilter for Held<F> {
    fn parse(&self, arguments: FilterArguments<'_>) -> Result<Box<dyn Filter>> {
        let args: Vec<Expression> = arguments.positional.collect();
        let inner = self.0.parse(FilterArguments {
            positional: Box::new(args.clone().into_iter()),
            keyword: arguments.keyword,
        })?;
        Ok(Box::new(HeldFilter {
            name: self.0.reflection().name().to_owned(),
            args,
            inner,
        }))
    }

    fn reflection(&self) -> &dyn FilterReflection {
        self.0.reflection()
    }
}

#[derive(Debug)]
struct HeldFilter {
    name: String,
    args: Vec<Expression>,
    inner: Box<dyn Filter>,
}

impl std::fmt::Display for HeldFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl HeldFilter {
    /// The result's size where it can be known before it is made: the
    /// filters whose result can be the product of their input's and
    /// argument's sizes.
    fn ahead(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Option<usize> {
        let arg = |i: usize| {
            let v = self.args.get(i)?.evaluate(runtime).ok()?;
            Some(v.to_kstr().len())
        };
        match self.name.as_str() {
            "replace" => {
                let text = input.to_kstr();
                let search = self.args.first()?.evaluate(runtime).ok()?;
                let search = search.to_kstr();
                let found = match search.is_empty() {
                    true => text.chars().count() + 1,
                    false => text.matches(search.as_str()).count(),
                };
                let with = arg(1).unwrap_or(0);
                Some(text.len() - found * search.len() + found * with)
            }
            "join" => {
                let items = input.as_array()?;
                let gaps = (items.size() as usize).saturating_sub(1);
                let text: usize = items.values().map(|v| v.to_kstr().len()).sum();
                Some(text + gaps * arg(0).unwrap_or(1))
            }
            _ => None,
        }
    }
}

impl Filter for HeldFilter {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        let before = size(input);
        let ahead = self.ahead(input, runtime);
        charge(|b| ahead.and_then(|n| b.bytes(n, before)))?;
        let value = self.inner.evaluate(input, runtime)?;
        let after = size(&value);
        charge(|b| b.bytes(after, before))?;
        Ok(value)
    }
}

/// Registers each named standard filter held under the byte limit.
macro_rules! held {
    ($builder:expr, $($filter:ident),* $(,)?) => {
        $builder$(.filter(Held(liquid_lib::stdlib::$filter)))*
    };
}

/// liquid's standard library, with its loops, `capture`, `ifchanged` and
/// filters within the render's budget (each replaces the one of its name).
pub fn stdlib() -> liquid::ParserBuilder {
    use liquid_lib::stdlib::{ForBlock, TableRowBlock};
    let blocks = liquid::ParserBuilder::with_stdlib()
        .block(Loop(ForBlock))
        .block(Loop(TableRowBlock))
        .block(Capture)
        .block(IfChanged);
    held!(
        blocks,
        Abs,
        Append,
        AtLeast,
        AtMost,
        Capitalize,
        Ceil,
        Compact,
        Concat,
        Date,
        Default,
        DividedBy,
        Downcase,
        Escape,
        EscapeOnce,
        First,
        Floor,
        Join,
        Last,
        Lstrip,
        Map,
        Minus,
        Modulo,
        NewlineToBr,
        Plus,
        Prepend,
        Remove,
        RemoveFirst,
        Replace,
        ReplaceFirst,
        Reverse,
        Round,
        Rstrip,
        Size,
        Slice,
        Sort,
        SortNatural,
        Split,
        Strip,
        StripHtml,
        StripNewlines,
        Times,
        Truncate,
        TruncateWords,
        Uniq,
        Upcase,
        UrlDecode,
        UrlEncode,
        Where,
    )
}
