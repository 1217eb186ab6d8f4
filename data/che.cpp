// The CHE task generators (CHE.md §2): one small pure function per task, the bit-vector big integers that
// binary_addition, binary_multiplication and compute_sqrt need, and the iterative bracket grammar shared
// by modular_arithmetic_brackets and solve_equation.
#include "data/che.h"

#include <algorithm>
#include <array>
#include <utility>

#include "kernels/error.h"

namespace dape::data::che {
namespace {

constexpr int kModulus = 5;
// The terminator of the masked tasks' targets; padding after it is class 0.
constexpr int32_t kTerminator = 2;

// Floor modulo into [0, kModulus), so negative values wrap (CHE.md §2.2: -4 is 1).
int floor_mod(int64_t value) {
  const int64_t r = value % kModulus;
  return static_cast<int>(r < 0 ? r + kModulus : r);
}

// U{lo..hi}, both ends inclusive.
int uniform_int(Rng& rng, int lo, int hi) {
  return lo + static_cast<int>(rng.below(static_cast<uint64_t>(hi - lo + 1)));
}

// `count` i.i.d. uniform symbols from {0, ..., alphabet - 1}.
std::vector<int32_t> uniform_symbols(Rng& rng, int count, int alphabet) {
  std::vector<int32_t> symbols(static_cast<size_t>(count));
  for (int32_t& s : symbols) s = uniform_int(rng, 0, alphabet - 1);
  return symbols;
}

// ---- Big integers as little-endian bit vectors: bit i has weight 2^i. ----

using Bits = std::vector<int32_t>;

// A uniform integer in [1, 2^width - 1] as width bits: uniform bit strings, rejecting the all-zero one,
// so no value is favoured (CHE.md pitfall 11: never modulo).
Bits uniform_nonzero_bits(Rng& rng, int width) {
  while (true) {
    Bits bits = uniform_symbols(rng, width, 2);
    if (std::find(bits.begin(), bits.end(), 1) != bits.end()) return bits;
  }
}

// The bits of value in exactly width bits (value < 2^width).
Bits small_to_bits(uint64_t value, int width) {
  Bits bits(static_cast<size_t>(width));
  for (int i = 0; i < width; ++i) bits[i] = static_cast<int32_t>((value >> i) & 1);
  return bits;
}

// Drops most-significant zeros, keeping one bit for zero: the "minimal" little-endian form of targets.
Bits minimal(Bits bits) {
  while (bits.size() > 1 && bits.back() == 0) bits.pop_back();
  return bits;
}

// x + y, school-book with a ripple carry; the result has one bit more than the wider operand.
Bits add(const Bits& x, const Bits& y) {
  Bits sum(std::max(x.size(), y.size()) + 1, 0);
  int carry = 0;
  for (size_t i = 0; i < sum.size(); ++i) {
    const int column = (i < x.size() ? x[i] : 0) + (i < y.size() ? y[i] : 0) + carry;
    sum[i] = column & 1;
    carry = column >> 1;
  }
  return sum;
}

// x * y, school-book: y shifted by i is added for every set bit i of x. The product fits x.size() +
// y.size() bits, so the last carry always lands inside.
Bits multiply(const Bits& x, const Bits& y) {
  Bits product(x.size() + y.size(), 0);
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] == 0) continue;
    int carry = 0;
    for (size_t j = 0; j < y.size() || carry != 0; ++j) {
      const int column = product[i + j] + (j < y.size() ? y[j] : 0) + carry;
      product[i + j] = column & 1;
      carry = column >> 1;
    }
  }
  return product;
}

// Whether x < y for two vectors of one width.
bool less(const Bits& x, const Bits& y) {
  for (size_t i = x.size(); i-- > 0;) {
    if (x[i] != y[i]) return x[i] < y[i];
  }
  return false;
}

// x -= y for two vectors of one width, with x >= y.
void subtract_in_place(Bits& x, const Bits& y) {
  int borrow = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const int column = x[i] - y[i] - borrow;
    x[i] = column & 1;
    borrow = column < 0 ? 1 : 0;
  }
}

// x * 2^shift for a fixed width; the callers' bounds guarantee the bits shifted out are zero.
void shift_left(Bits& x, int shift) {
  for (size_t i = x.size(); i-- > 0;) x[i] = i >= static_cast<size_t>(shift) ? x[i - shift] : 0;
}

// floor(sqrt(x)) in ceil(x.size() / 2) bits, digit by digit in base 4: bring the input down two bits at
// a time from the top; the next root bit is 1 exactly when the remainder reaches 4 * root + 1, which is
// then subtracted. The remainder stays <= 2 * root, so with j < root_bits root bits found the next step
// sees at most 4 * remainder + 3 < 2^(j+3): root_bits + 2 bits hold every intermediate.
Bits integer_sqrt(const Bits& x) {
  const int root_bits = static_cast<int>((x.size() + 1) / 2);
  const int width = root_bits + 2;
  Bits root(width, 0), remainder(width, 0), trial(width, 0);
  auto bit_of_x = [&x](int i) { return i < static_cast<int>(x.size()) ? x[i] : 0; };
  for (int pair = root_bits - 1; pair >= 0; --pair) {
    shift_left(remainder, 2);
    remainder[0] = bit_of_x(2 * pair);
    remainder[1] = bit_of_x(2 * pair + 1);
    trial = root;
    shift_left(trial, 2);
    trial[0] = 1;
    shift_left(root, 1);
    if (!less(remainder, trial)) {
      subtract_in_place(remainder, trial);
      root[0] = 1;
    }
  }
  root.resize(root_bits);
  return root;
}

// content, the terminator, then zero padding to k positions (the masked tasks' target layout).
std::vector<int32_t> terminated(const std::vector<int32_t>& content, int k) {
  std::vector<int32_t> target(content);
  target.push_back(kTerminator);
  target.resize(static_cast<size_t>(k), 0);
  return target;
}

// ---- The bracket grammar of CHE.md §2.7, shared with solve_equation (§2.8). ----

// The two tasks number their symbols differently (CHE.md pitfall 10); digits are 0-4 in both.
struct BracketAlphabet {
  int num_operators;                 // 3 with '*', 2 for {+, -} only
  std::array<int32_t, 3> operators;  // ids of '+', '-', '*' ('*' unused at 2); '-' is also unary minus
  int32_t open, close;
};
constexpr BracketAlphabet kBracketsAlphabet{3, {5, 6, 7}, 8, 9};
constexpr BracketAlphabet kEquationAlphabet{2, {5, 6, 0}, 7, 8};

struct BracketExpression {
  std::vector<int32_t> tokens;
  int value;  // mod kModulus
};

// One expression of exactly `length` symbols from the grammar gen(1) = d, gen(2) = -d, gen(3) = (d),
// gen(4) = (-d), gen(L >= 5) = "(" gen(a) op gen(L-3-a) ")" with a ~ U{1..L-4}, d ~ U{0..4}. Built
// without recursion, so any length is safe: nodes are expanded in creation order, each writing its own
// brackets and operator straight into the token array at an offset fixed by its parent, and values are
// combined in a backward sweep, which meets both children of a node before the node itself.
BracketExpression generate_bracket_expression(int length, const BracketAlphabet& alphabet, Rng& rng) {
  struct Node {
    int length, start;
    int left = -1, right = -1, op = 0, value = 0;
  };
  std::vector<Node> nodes{{length, 0}};
  std::vector<int32_t> tokens(static_cast<size_t>(length));
  for (size_t i = 0; i < nodes.size(); ++i) {
    const int node_length = nodes[i].length;
    const int start = nodes[i].start;
    if (node_length < 5) {
      const int digit = uniform_int(rng, 0, kModulus - 1);
      const bool negated = node_length == 2 || node_length == 4;
      const bool bracketed = node_length >= 3;
      int pos = start;
      if (bracketed) tokens[pos++] = alphabet.open;
      if (negated) tokens[pos++] = alphabet.operators[1];
      tokens[pos++] = digit;
      if (bracketed) tokens[pos] = alphabet.close;
      nodes[i].value = negated ? floor_mod(-digit) : digit;
      continue;
    }
    const int left_length = uniform_int(rng, 1, node_length - 4);
    const int op = uniform_int(rng, 0, alphabet.num_operators - 1);
    tokens[start] = alphabet.open;
    tokens[start + 1 + left_length] = alphabet.operators[op];
    tokens[start + node_length - 1] = alphabet.close;
    nodes[i].op = op;
    nodes[i].left = static_cast<int>(nodes.size());
    nodes[i].right = static_cast<int>(nodes.size()) + 1;
    nodes.push_back({left_length, start + 1});
    nodes.push_back({node_length - 3 - left_length, start + 2 + left_length});
  }
  for (size_t i = nodes.size(); i-- > 0;) {
    Node& node = nodes[i];
    if (node.left < 0) continue;
    const int a = nodes[node.left].value, b = nodes[node.right].value;
    node.value = floor_mod(node.op == 0 ? a + b : node.op == 1 ? a - b : a * b);
  }
  return {std::move(tokens), nodes[0].value};
}

// ---- The tasks. Each computes one instance of requested length n >= 1. ----

// even_pairs: n fair bits; target 1 when the number of unequal neighbours (01 or 10) is odd.
Instance even_pairs(int n, Rng& rng) {
  Instance out{uniform_symbols(rng, n, 2), {}};
  int unequal = 0;
  for (int i = 1; i < n; ++i) unequal += out.input[i] != out.input[i - 1];
  out.target = {unequal % 2};
  return out;
}

// modular_arithmetic: digits at even positions and operators {+, -, *} (ids 5, 6, 7) at odd positions of
// an odd length m; target the value with '*' binding tighter, left to right, mod 5. Kept mod 5
// throughout, since + - * commute with the reduction.
Instance modular_arithmetic(int n, Rng& rng) {
  const int m = n % 2 == 1 ? n : n - 1;
  constexpr int32_t kPlus = 5, kTimes = 7;  // '-' is 6
  Instance out;
  out.input.resize(static_cast<size_t>(m));
  for (int i = 0; i < m; ++i) out.input[i] = i % 2 == 0 ? uniform_int(rng, 0, 4) : uniform_int(rng, 5, 7);
  int sum = 0, sign = 1, term = out.input[0];
  for (int i = 1; i < m; i += 2) {
    const int32_t op = out.input[i], digit = out.input[i + 1];
    if (op == kTimes) {
      term = floor_mod(term * digit);
    } else {
      sum = floor_mod(sum + sign * term);
      sign = op == kPlus ? 1 : -1;
      term = digit;
    }
  }
  out.target = {floor_mod(sum + sign * term)};
  return out;
}

// parity_check: n fair bits; target the number of 1s mod 2.
Instance parity_check(int n, Rng& rng) {
  Instance out{uniform_symbols(rng, n, 2), {}};
  int32_t parity = 0;
  for (int32_t bit : out.input) parity ^= bit;
  out.target = {parity};
  return out;
}

// cycle_navigation: n moves from {0 left, 1 stay, 2 right}; target the final position on a 5-cycle
// that starts at 0.
Instance cycle_navigation(int n, Rng& rng) {
  Instance out{uniform_symbols(rng, n, 3), {}};
  int position = 0;
  for (int32_t move : out.input) position = floor_mod(position + move - 1);
  out.target = {position};
  return out;
}

// stack_manipulation: s ~ U{1..n-1} stack bits listed bottom to top, then n - s actions from {2 POP,
// 3 PUSH 0, 4 PUSH 1} (n = 1: one bit, no actions). POP on an empty stack does nothing. Target: the
// final stack top to bottom, the terminator, zero padding to n + 1.
Instance stack_manipulation(int n, Rng& rng) {
  constexpr int32_t kPop = 2, kPush0 = 3;
  const int stack_size = n == 1 ? 1 : uniform_int(rng, 1, n - 1);
  Instance out{uniform_symbols(rng, stack_size, 2), {}};
  for (int i = stack_size; i < n; ++i) out.input.push_back(uniform_int(rng, 2, 4));
  std::vector<int32_t> stack(out.input.begin(), out.input.begin() + stack_size);
  for (int i = stack_size; i < n; ++i) {
    const int32_t action = out.input[i];
    if (action != kPop) {
      stack.push_back(action - kPush0);
    } else if (!stack.empty()) {
      stack.pop_back();
    }
  }
  std::reverse(stack.begin(), stack.end());
  out.target = terminated(stack, n + 1);
  return out;
}

// reverse_string: n fair bits; target the string backwards.
Instance reverse_string(int n, Rng& rng) {
  Instance out{uniform_symbols(rng, n, 2), {}};
  out.target.assign(out.input.rbegin(), out.input.rend());
  return out;
}

// modular_arithmetic_brackets: an expression of exactly n symbols from the bracket grammar with
// {+, -, *}; target its value mod 5.
Instance modular_arithmetic_brackets(int n, Rng& rng) {
  BracketExpression expression = generate_bracket_expression(n, kBracketsAlphabet, rng);
  return {std::move(expression.tokens), {expression.value}};
}

// solve_equation: e = gen(n - 2) with {+, -} only and v = value(e) mod 5; one digit of e, found from
// p ~ U{0..n-3} by stepping right with wrap-around, becomes x; input "e'=v", target the hidden digit.
// Under {+, -} x has coefficient +-1, so the digit is the only solution mod 5. n < 3: n zeros, target 0.
Instance solve_equation(int n, Rng& rng) {
  constexpr int32_t kUnknown = 9, kEquals = 10;
  if (n < 3) return {std::vector<int32_t>(static_cast<size_t>(n), 0), {0}};
  const int expression_length = n - 2;
  BracketExpression expression = generate_bracket_expression(expression_length, kEquationAlphabet, rng);
  std::vector<int32_t>& tokens = expression.tokens;
  int hole = uniform_int(rng, 0, expression_length - 1);
  while (tokens[hole] >= kModulus) hole = (hole + 1) % expression_length;
  const int32_t digit = tokens[hole];
  tokens[hole] = kUnknown;
  tokens.push_back(kEquals);
  tokens.push_back(expression.value);
  return {std::move(tokens), {digit}};
}

// duplicate_string: n fair bits; target the string written twice.
Instance duplicate_string(int n, Rng& rng) {
  Instance out{uniform_symbols(rng, n, 2), {}};
  out.target = out.input;
  out.target.insert(out.target.end(), out.input.begin(), out.input.end());
  return out;
}

// missing_duplicate_string: w = s s for h = floor(n/2) fair bits s; one position q ~ U{0..2h-1} of w
// becomes the hole 2 and its bit is the target; odd n appends the pad 3. n = 1: input [1], target 1.
Instance missing_duplicate_string(int n, Rng& rng) {
  constexpr int32_t kHole = 2, kPad = 3;
  if (n == 1) return {{1}, {1}};
  const int half = n / 2;
  Instance out{uniform_symbols(rng, half, 2), {}};
  out.input.insert(out.input.end(), out.input.begin(), out.input.end());
  const int hole = uniform_int(rng, 0, 2 * half - 1);
  out.target = {out.input[hole]};
  out.input[hole] = kHole;
  if (n % 2 == 1) out.input.push_back(kPad);
  return out;
}

// odds_first: n fair bits; target the symbols at 0-based odd indices, then those at even indices
// (the code's order, not its docstring's; CHE.md pitfall 1).
Instance odds_first(int n, Rng& rng) {
  Instance out{uniform_symbols(rng, n, 2), {}};
  for (int i = 1; i < n; i += 2) out.target.push_back(out.input[i]);
  for (int i = 0; i < n; i += 2) out.target.push_back(out.input[i]);
  return out;
}

// The operands of binary_addition and binary_multiplication for n >= 3: a ~ U{1..n-2}, b = n - 1 - a,
// X ~ U{1..2^a-1} and Y ~ U{1..2^b-1} in a and b bits.
struct BinaryOperands {
  Bits x, y;
};
BinaryOperands binary_operands(int n, Rng& rng) {
  const int a = uniform_int(rng, 1, n - 2);
  Bits x = uniform_nonzero_bits(rng, a);
  Bits y = uniform_nonzero_bits(rng, n - 1 - a);
  return {std::move(x), std::move(y)};
}

// The input "X op Y" in little-endian bits, op being token 2 ('+' or '*').
std::vector<int32_t> binary_expression(const BinaryOperands& operands) {
  std::vector<int32_t> input(operands.x);
  input.push_back(2);
  input.insert(input.end(), operands.y.begin(), operands.y.end());
  return input;
}

// binary_addition: "X + Y" in little-endian bits; target the minimal little-endian bits of X + Y, the
// terminator, zero padding to n + 1. n <= 2: x ~ U{0..2^n-2} in n bits; target x's minimal bits (0 is
// "0") the same way.
Instance binary_addition(int n, Rng& rng) {
  if (n <= 2) {
    const uint64_t x = rng.below((uint64_t{1} << n) - 1);
    return {small_to_bits(x, n), terminated(minimal(small_to_bits(x, n)), n + 1)};
  }
  const BinaryOperands operands = binary_operands(n, rng);
  return {binary_expression(operands), terminated(minimal(add(operands.x, operands.y)), n + 1)};
}

// binary_multiplication: as binary_addition with X * Y, but padded to n positions only: the product
// has at most n - 1 bits. n <= 2: x ~ U{0..2^n-2} in n bits as for binary_addition; target n - 1
// zeros, then the terminator.
Instance binary_multiplication(int n, Rng& rng) {
  if (n <= 2) {
    const uint64_t x = rng.below((uint64_t{1} << n) - 1);
    return {small_to_bits(x, n), terminated(Bits(static_cast<size_t>(n - 1), 0), n)};
  }
  const BinaryOperands operands = binary_operands(n, rng);
  return {binary_expression(operands), terminated(minimal(multiply(operands.x, operands.y)), n)};
}

// compute_sqrt: x ~ U{1..2^n-1} written big-endian in n bits; target floor(sqrt(x)) big-endian in
// ceil(n/2) bits.
Instance compute_sqrt(int n, Rng& rng) {
  const Bits x = uniform_nonzero_bits(rng, n);
  const Bits root = integer_sqrt(x);
  return {std::vector<int32_t>(x.rbegin(), x.rend()), std::vector<int32_t>(root.rbegin(), root.rend())};
}

// bucket_sort: n uniform symbols from {0..4}; target them in ascending order.
Instance bucket_sort(int n, Rng& rng) {
  Instance out{uniform_symbols(rng, n, 5), {}};
  out.target = out.input;
  std::sort(out.target.begin(), out.target.end());
  return out;
}

// Throws ConfigError naming the task when n is not a valid requested length.
void check_length(Task task, int n) {
  if (n < 1) {
    throw ConfigError("CHE task '" + std::string(info(task).name) +
                      "': requested length n = " + std::to_string(n) + " is invalid; expected n >= 1");
  }
}

}  // namespace

const std::vector<TaskInfo>& all_tasks() {
  static const std::vector<TaskInfo> tasks = {
      {Task::even_pairs, "even_pairs", "regular", 2, 2, false, false, 0.5},
      {Task::modular_arithmetic, "modular_arithmetic", "regular", 9, 5, false, false, 0.2},
      {Task::parity_check, "parity_check", "regular", 2, 2, false, true, 0.5},
      {Task::cycle_navigation, "cycle_navigation", "regular", 3, 5, false, true, 0.2},
      {Task::stack_manipulation, "stack_manipulation", "dcf", 5, 3, true, false, 0.5},
      {Task::reverse_string, "reverse_string", "dcf", 2, 2, false, false, 0.5},
      {Task::modular_arithmetic_brackets, "modular_arithmetic_brackets", "dcf", 11, 5, false, false, 0.2},
      {Task::solve_equation, "solve_equation", "dcf", 11, 5, false, false, 0.2},
      {Task::duplicate_string, "duplicate_string", "cs", 2, 2, false, false, 0.5},
      {Task::missing_duplicate_string, "missing_duplicate_string", "cs", 4, 2, false, false, 0.5},
      {Task::odds_first, "odds_first", "cs", 2, 2, false, false, 0.5},
      {Task::binary_addition, "binary_addition", "cs", 3, 3, true, false, 0.5},
      {Task::binary_multiplication, "binary_multiplication", "cs", 3, 3, true, false, 0.5},
      {Task::compute_sqrt, "compute_sqrt", "cs", 2, 2, false, false, 0.5},
      {Task::bucket_sort, "bucket_sort", "cs", 5, 5, false, true, 0.2},
  };
  return tasks;
}

const TaskInfo& info(Task task) {
  const auto index = static_cast<size_t>(task);
  DAPE_ASSERT(index < all_tasks().size());
  return all_tasks()[index];
}

Task parse_task(const std::string& name) {
  std::string choices;
  for (const TaskInfo& task : all_tasks()) {
    if (name == task.name) return task.task;
    choices += (choices.empty() ? "" : ", ") + std::string(task.name);
  }
  throw ConfigError("unknown CHE task '" + name + "'; expected one of: " + choices);
}

int input_length(Task task, int n) {
  check_length(task, n);
  return task == Task::modular_arithmetic && n % 2 == 0 ? n - 1 : n;
}

int output_length(Task task, int n) {
  const int m = input_length(task, n);
  switch (task) {
    case Task::stack_manipulation:
    case Task::binary_addition:
      return m + 1;
    case Task::reverse_string:
    case Task::odds_first:
    case Task::binary_multiplication:
    case Task::bucket_sort:
      return m;
    case Task::duplicate_string:
      return 2 * m;
    case Task::compute_sqrt:
      return (m + 1) / 2;
    case Task::even_pairs:
    case Task::modular_arithmetic:
    case Task::parity_check:
    case Task::cycle_navigation:
    case Task::modular_arithmetic_brackets:
    case Task::solve_equation:
    case Task::missing_duplicate_string:
      return 1;
  }
  internal_error("unhandled CHE task", __FILE__, __LINE__);
}

Instance generate(Task task, int n, Rng& rng) {
  check_length(task, n);
  switch (task) {
    case Task::even_pairs:
      return even_pairs(n, rng);
    case Task::modular_arithmetic:
      return modular_arithmetic(n, rng);
    case Task::parity_check:
      return parity_check(n, rng);
    case Task::cycle_navigation:
      return cycle_navigation(n, rng);
    case Task::stack_manipulation:
      return stack_manipulation(n, rng);
    case Task::reverse_string:
      return reverse_string(n, rng);
    case Task::modular_arithmetic_brackets:
      return modular_arithmetic_brackets(n, rng);
    case Task::solve_equation:
      return solve_equation(n, rng);
    case Task::duplicate_string:
      return duplicate_string(n, rng);
    case Task::missing_duplicate_string:
      return missing_duplicate_string(n, rng);
    case Task::odds_first:
      return odds_first(n, rng);
    case Task::binary_addition:
      return binary_addition(n, rng);
    case Task::binary_multiplication:
      return binary_multiplication(n, rng);
    case Task::compute_sqrt:
      return compute_sqrt(n, rng);
    case Task::bucket_sort:
      return bucket_sort(n, rng);
  }
  internal_error("unhandled CHE task", __FILE__, __LINE__);
}

Instance sample(Task task, int n, uint64_t seed, uint64_t step, uint64_t index) {
  Rng rng(Rng::mix(Rng::mix(Rng::mix(seed ^ kSampleStream) ^ step) ^ index));
  return generate(task, n, rng);
}

int sample_length(uint64_t seed, uint64_t step, int lo, int hi) {
  if (lo < 1 || hi < lo) {
    throw ConfigError("CHE length range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                      "] is invalid; expected 1 <= lo <= hi");
  }
  Rng rng(Rng::mix(Rng::mix(seed ^ kLengthStream) ^ step));
  return lo + static_cast<int>(rng.below(static_cast<uint64_t>(hi - lo) + 1));
}

std::vector<uint8_t> accuracy_mask(Task task, const std::vector<int32_t>& target) {
  std::vector<uint8_t> mask(target.size(), 1);
  if (!info(task).masked) return mask;
  const auto terminator = std::find(target.begin(), target.end(), kTerminator);
  if (terminator != target.end()) std::fill(mask.begin() + (terminator - target.begin()) + 1, mask.end(), 0);
  return mask;
}

}  // namespace dape::data::che
