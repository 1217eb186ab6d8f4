// The CHE task generators (data/che.h) against CHE.md: the task table, every worked example of §2, an
// independent solver per task applied to random instances at n in 1..500, the sampling distributions,
// the counter-based keying and the errors users read. The solvers share no code with data/che.cpp:
// GMP for the big integers, a shunting-yard for operator precedence, a recursive-descent parser for the
// bracket grammar, substitution for solve_equation, a stack machine for stack_manipulation.
#include <gmpxx.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>
#include <stack>
#include <string>
#include <thread>
#include <vector>

#include "data/che.h"
#include "error_message.h"
#include "kernels/error.h"

namespace dape::data::che {
namespace {

using testing::error_message;
using Ids = std::vector<int32_t>;

// The value mod 5 in 0..4, negative values wrapping.
int mod5(int64_t value) {
  return static_cast<int>(((value % 5) + 5) % 5);
}

std::string describe(const Ids& ids) {
  std::ostringstream out;
  for (int32_t id : ids) out << id << ' ';
  return out.str();
}

// ---- Independent solvers: the target each input determines, from CHE.md §2. Each also checks that the
// input has the shape the task promises (ADD_FAILURE otherwise). ----

// Value of "d op d op ... d" (digits 0-4, + 5, - 6, * 7) by shunting-yard to postfix, then a value stack.
int evaluate_with_precedence(const Ids& input) {
  constexpr int32_t kPlus = 5, kMinus = 6, kTimes = 7;
  auto precedence = [](int32_t op) { return op == kTimes ? 2 : 1; };
  Ids postfix, operators;
  for (int32_t token : input) {
    if (token < 5) {
      postfix.push_back(token);
      continue;
    }
    while (!operators.empty() && precedence(operators.back()) >= precedence(token)) {
      postfix.push_back(operators.back());
      operators.pop_back();
    }
    operators.push_back(token);
  }
  postfix.insert(postfix.end(), operators.rbegin(), operators.rend());
  std::stack<int64_t> values;
  for (int32_t token : postfix) {
    if (token < 5) {
      values.push(token);
      continue;
    }
    const int64_t right = values.top();
    values.pop();
    const int64_t left = values.top();
    values.pop();
    values.push(mod5(token == kPlus ? left + right : token == kMinus ? left - right : left * right));
  }
  return static_cast<int>(values.top());
}

Ids solve_modular_arithmetic(const Ids& input) {
  EXPECT_EQ(input.size() % 2, 1u) << "modular_arithmetic inputs have odd length";
  for (size_t i = 0; i < input.size(); ++i) {
    const bool digit = input[i] < 5, operation = input[i] >= 5 && input[i] <= 7;
    EXPECT_TRUE(i % 2 == 0 ? digit : operation) << "digits at even, operators at odd positions: " << i;
  }
  return {evaluate_with_precedence(input)};
}

// The bracket grammar's symbols; -1 marks a symbol the task does not have.
struct BracketSyntax {
  int32_t plus, minus, times, open, close, unknown;
};
constexpr BracketSyntax kBracketsSyntax{5, 6, 7, 8, 9, -1};
constexpr BracketSyntax kEquationSyntax{5, 6, -1, 7, 8, 9};

// Recursive descent over E := d | '-' d | '(' A ')' | '(' E op E ')', A being d or '-' d: exactly the
// language of CHE.md §2.7's gen(). Evaluates mod 5 with the unknown x standing for `unknown_value`, and
// records the binary operators and the top-level left operand's length for the distribution tests.
class BracketParser {
 public:
  BracketParser(const Ids& tokens, size_t end, const BracketSyntax& syntax, int unknown_value)
      : tokens_(tokens), end_(end), syntax_(syntax), unknown_value_(unknown_value) {}

  // The value of tokens[0, end) as one expression; nullopt when it is not one.
  std::optional<int> parse() {
    const std::optional<int> value = expression(0);
    if (!value || pos_ != end_) return std::nullopt;
    return value;
  }

  Ids binary_operators;
  size_t top_split = 0;  // 0 when the expression has no top-level operator

 private:
  bool at_digit() const {
    return pos_ < end_ && (tokens_[pos_] < 5 || (syntax_.unknown >= 0 && tokens_[pos_] == syntax_.unknown));
  }
  int take_digit() {
    const int32_t token = tokens_[pos_++];
    return token == syntax_.unknown ? unknown_value_ : token;
  }

  std::optional<int> expression(int depth) {
    if (pos_ >= end_) return std::nullopt;
    if (at_digit()) return take_digit();
    if (tokens_[pos_] == syntax_.minus) {
      ++pos_;
      if (!at_digit()) return std::nullopt;
      return mod5(-take_digit());
    }
    if (tokens_[pos_] != syntax_.open) return std::nullopt;
    ++pos_;
    const size_t left_start = pos_;
    const std::optional<int> left = expression(depth + 1);
    if (!left || pos_ >= end_) return std::nullopt;
    if (tokens_[pos_] == syntax_.close) {
      if (pos_ - left_start > 2) return std::nullopt;  // only d or -d stand alone in brackets
      ++pos_;
      return left;
    }
    const int32_t op = tokens_[pos_];
    if (op != syntax_.plus && op != syntax_.minus && op != syntax_.times) return std::nullopt;
    if (depth == 0) top_split = pos_ - left_start;
    binary_operators.push_back(op);
    ++pos_;
    const std::optional<int> right = expression(depth + 1);
    if (!right || pos_ >= end_ || tokens_[pos_] != syntax_.close) return std::nullopt;
    ++pos_;
    if (op == syntax_.plus) return mod5(*left + *right);
    if (op == syntax_.minus) return mod5(*left - *right);
    return mod5(*left * *right);
  }

  const Ids& tokens_;
  size_t end_;
  BracketSyntax syntax_;
  int unknown_value_;
  size_t pos_ = 0;
};

Ids solve_brackets(const Ids& input) {
  const std::optional<int> value = BracketParser(input, input.size(), kBracketsSyntax, 0).parse();
  EXPECT_TRUE(value.has_value()) << "not an expression of the bracket grammar";
  return {value.value_or(-1)};
}

// The x that makes "e' = v" true mod 5, found by substituting 0..4; exactly one must work.
Ids solve_equation_by_substitution(const Ids& input) {
  const size_t n = input.size();
  if (n < 3) {
    EXPECT_EQ(std::count(input.begin(), input.end(), 0), static_cast<int64_t>(n)) << "degenerate: all 0";
    return {0};
  }
  EXPECT_EQ(input[n - 2], 10) << "'=' expected before the value";
  EXPECT_LT(input[n - 1], 5) << "the value is a digit";
  EXPECT_EQ(std::count(input.begin(), input.end() - 2, 9), 1) << "exactly one x";
  Ids solutions;
  for (int x = 0; x < 5; ++x) {
    const std::optional<int> value = BracketParser(input, n - 2, kEquationSyntax, x).parse();
    EXPECT_TRUE(value.has_value()) << "the left side is not an expression of the {+, -} bracket grammar";
    if (value == input[n - 1]) solutions.push_back(x);
  }
  EXPECT_EQ(solutions.size(), 1u) << "the solution must be unique mod 5";
  return {solutions.empty() ? -1 : solutions.front()};
}

// Runs the actions on an explicit stack; the target lists the final stack top first.
Ids solve_stack(const Ids& input) {
  const size_t n = input.size();
  const size_t stack_size =
      std::find_if(input.begin(), input.end(), [](int32_t s) { return s >= 2; }) - input.begin();
  EXPECT_GE(stack_size, 1u);
  EXPECT_TRUE(n == 1 || stack_size <= n - 1) << "at least one action for n >= 2";
  std::stack<int32_t> stack;
  for (size_t i = 0; i < stack_size; ++i) stack.push(input[i]);
  for (size_t i = stack_size; i < n; ++i) {
    EXPECT_TRUE(input[i] >= 2 && input[i] <= 4) << "action expected at " << i;
    if (input[i] == 3) stack.push(0);
    if (input[i] == 4) stack.push(1);
    if (input[i] == 2 && !stack.empty()) stack.pop();
  }
  Ids target;
  for (; !stack.empty(); stack.pop()) target.push_back(stack.top());
  target.push_back(2);
  target.resize(n + 1, 0);
  return target;
}

Ids solve_missing_duplicate(const Ids& input) {
  const size_t n = input.size();
  if (n == 1) {
    EXPECT_EQ(input, Ids{1});
    return {1};
  }
  const size_t half = n / 2;
  EXPECT_TRUE(n % 2 == 0 || input.back() == 3) << "odd n ends with the pad";
  EXPECT_EQ(std::count(input.begin(), input.begin() + 2 * half, 2), 1) << "exactly one hole";
  const size_t hole = std::find(input.begin(), input.end(), 2) - input.begin();
  for (size_t i = 0; i < half; ++i) {
    EXPECT_TRUE(i == hole % half || input[i] == input[i + half]) << "the two copies differ at " << i;
  }
  return {input[hole < half ? hole + half : hole - half]};
}

Ids solve_odds_first(const Ids& input) {
  const size_t m = input.size(), odd_count = m / 2;
  Ids target(m);
  for (size_t i = 0; i < m; ++i) target[i] = i < odd_count ? input[2 * i + 1] : input[2 * (i - odd_count)];
  return target;
}

// The integer whose bits input[begin, end) are, least significant first.
mpz_class from_little_endian(const Ids& bits, size_t begin, size_t end) {
  mpz_class value;
  for (size_t i = begin; i < end; ++i) {
    EXPECT_LE(bits[i], 1) << "bit expected at " << i;
    if (bits[i] == 1) mpz_setbit(value.get_mpz_t(), i - begin);
  }
  return value;
}

// value's bits with no most-significant zeros (zero is "0"), the terminator, zeros up to k positions.
Ids terminated_bits(const mpz_class& value, size_t k) {
  Ids target;
  if (value == 0) target.push_back(0);
  if (value != 0) {
    for (size_t i = 0; i < mpz_sizeinbase(value.get_mpz_t(), 2); ++i) {
      target.push_back(mpz_tstbit(value.get_mpz_t(), i));
    }
  }
  target.push_back(2);
  EXPECT_LE(target.size(), k) << "the result does not fit the output";
  target.resize(k, 0);
  return target;
}

Ids solve_binary(Task task, const Ids& input) {
  const size_t n = input.size();
  const bool addition = task == Task::binary_addition;
  if (n <= 2) {
    const mpz_class x = from_little_endian(input, 0, n);
    EXPECT_LE(x, (mpz_class(1) << n) - 2) << "degenerate x is drawn from 0..2^n-2";
    return addition ? terminated_bits(x, n + 1) : (n == 1 ? Ids{2} : Ids{0, 2});
  }
  EXPECT_EQ(std::count(input.begin(), input.end(), 2), 1) << "exactly one operator";
  const size_t a = std::find(input.begin(), input.end(), 2) - input.begin();
  EXPECT_TRUE(a >= 1 && a <= n - 2) << "both operands have at least one bit";
  const mpz_class x = from_little_endian(input, 0, a), y = from_little_endian(input, a + 1, n);
  EXPECT_GE(x, 1);
  EXPECT_GE(y, 1);
  return addition ? terminated_bits(x + y, n + 1) : terminated_bits(x * y, n);
}

Ids solve_sqrt(const Ids& input) {
  const size_t n = input.size(), k = (n + 1) / 2;
  mpz_class x;
  for (size_t i = 0; i < n; ++i) {
    if (input[i] == 1) mpz_setbit(x.get_mpz_t(), n - 1 - i);
  }
  EXPECT_GE(x, 1) << "x is drawn from 1..2^n-1";
  const mpz_class root = sqrt(x);
  Ids target(k);
  for (size_t i = 0; i < k; ++i) target[i] = mpz_tstbit(root.get_mpz_t(), k - 1 - i);
  return target;
}

Ids solve_bucket_sort(const Ids& input) {
  std::vector<size_t> counts(5, 0);
  for (int32_t symbol : input) ++counts.at(symbol);
  Ids target;
  for (int32_t symbol = 0; symbol < 5; ++symbol) target.insert(target.end(), counts[symbol], symbol);
  return target;
}

// The target `input` determines under `task`, computed without data/che.cpp.
Ids solve(Task task, const Ids& input) {
  const auto count = [&input](int32_t symbol) { return std::count(input.begin(), input.end(), symbol); };
  switch (task) {
    case Task::even_pairs:
      return {input.front() != input.back() ? 1 : 0};
    case Task::modular_arithmetic:
      return solve_modular_arithmetic(input);
    case Task::parity_check:
      return {static_cast<int32_t>(count(1) % 2)};
    case Task::cycle_navigation:
      return {mod5(count(2) - count(0))};
    case Task::stack_manipulation:
      return solve_stack(input);
    case Task::reverse_string:
      return Ids(input.rbegin(), input.rend());
    case Task::modular_arithmetic_brackets:
      return solve_brackets(input);
    case Task::solve_equation:
      return solve_equation_by_substitution(input);
    case Task::duplicate_string: {
      Ids twice = input;
      for (int32_t bit : input) twice.push_back(bit);
      return twice;
    }
    case Task::missing_duplicate_string:
      return solve_missing_duplicate(input);
    case Task::odds_first:
      return solve_odds_first(input);
    case Task::binary_addition:
    case Task::binary_multiplication:
      return solve_binary(task, input);
    case Task::compute_sqrt:
      return solve_sqrt(input);
    case Task::bucket_sort:
      return solve_bucket_sort(input);
  }
  ADD_FAILURE() << "no solver for task " << static_cast<int>(task);
  return {};
}

// Positions up to and including the first terminator for the three masked tasks, else all.
std::vector<uint8_t> expected_mask(Task task, const Ids& target) {
  const bool masked = task == Task::stack_manipulation || task == Task::binary_addition ||
                      task == Task::binary_multiplication;
  std::vector<uint8_t> mask(target.size(), 1);
  bool after_terminator = false;
  for (size_t i = 0; i < target.size(); ++i) {
    if (masked && after_terminator) mask[i] = 0;
    if (target[i] == 2) after_terminator = true;
  }
  return mask;
}

// k as a function of the actual input length m (CHE.md §0, pitfall 2).
int expected_output_length(Task task, int m) {
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
      return static_cast<int>(std::ceil(m / 2.0));
    default:
      return 1;
  }
}

std::string task_test_name(const ::testing::TestParamInfo<TaskInfo>& param) {
  return param.param.name;
}

// ---- The table. ----

TEST(CheTable, MatchesTheCheSummaryTable) {
  const std::vector<TaskInfo>& tasks = all_tasks();
  ASSERT_EQ(tasks.size(), 15u);
  const std::vector<std::string> names = {"even_pairs",
                                          "modular_arithmetic",
                                          "parity_check",
                                          "cycle_navigation",
                                          "stack_manipulation",
                                          "reverse_string",
                                          "modular_arithmetic_brackets",
                                          "solve_equation",
                                          "duplicate_string",
                                          "missing_duplicate_string",
                                          "odds_first",
                                          "binary_addition",
                                          "binary_multiplication",
                                          "compute_sqrt",
                                          "bucket_sort"};
  const std::vector<std::string> levels = {"regular", "regular", "regular", "regular", "dcf",
                                           "dcf",     "dcf",     "dcf",     "cs",      "cs",
                                           "cs",      "cs",      "cs",      "cs",      "cs"};
  // The model's one-hot width, input size + 1 for the blank (CHE.md §0).
  const std::vector<int> one_hot_widths = {3, 10, 3, 4, 6, 3, 12, 12, 3, 5, 3, 4, 4, 3, 6};
  const std::vector<int> classes = {2, 5, 2, 5, 3, 2, 5, 5, 2, 2, 2, 3, 3, 2, 5};
  for (size_t i = 0; i < tasks.size(); ++i) {
    SCOPED_TRACE(names[i]);
    const TaskInfo& task = tasks[i];
    EXPECT_EQ(task.task, static_cast<Task>(i));
    EXPECT_EQ(&info(task.task), &task);
    EXPECT_EQ(task.name, names[i]);
    EXPECT_EQ(task.level, levels[i]);
    EXPECT_EQ(task.input_size + 1, one_hot_widths[i]);
    EXPECT_EQ(task.classes, classes[i]);
    const bool masked = names[i] == "stack_manipulation" || names[i] == "binary_addition" ||
                        names[i] == "binary_multiplication";
    EXPECT_EQ(task.masked, masked);
    const bool invariant =
        names[i] == "parity_check" || names[i] == "cycle_navigation" || names[i] == "bucket_sort";
    EXPECT_EQ(task.permutation_invariant, invariant);
    const bool five_classes_chance = names[i] == "modular_arithmetic" || names[i] == "cycle_navigation" ||
                                     names[i] == "bucket_sort" || names[i] == "solve_equation" ||
                                     names[i] == "modular_arithmetic_brackets";
    EXPECT_EQ(task.chance, five_classes_chance ? 0.2 : 0.5);
    EXPECT_EQ(parse_task(names[i]), task.task);
  }
}

TEST(CheTable, LengthsFollowTheSummaryTable) {
  for (const TaskInfo& task : all_tasks()) {
    SCOPED_TRACE(task.name);
    for (int n = 1; n <= 500; ++n) {
      const int m = task.task == Task::modular_arithmetic && n % 2 == 0 ? n - 1 : n;
      ASSERT_EQ(input_length(task.task, n), m) << "n = " << n;
      ASSERT_EQ(output_length(task.task, n), expected_output_length(task.task, m)) << "n = " << n;
    }
  }
  // The longest sequence of the benchmark is duplicate_string at n = 500 (CHE.md §2.9).
  EXPECT_EQ(input_length(Task::duplicate_string, 500) + output_length(Task::duplicate_string, 500), 1500);
  EXPECT_EQ(input_length(Task::modular_arithmetic, 500), 499);
}

// ---- The worked examples of CHE.md §2. ----

struct Example {
  Task task;
  int n;  // requested length
  Ids input, target;
  int counted;  // positions the accuracy mask covers
};

const std::vector<Example>& worked_examples() {
  static const std::vector<Example> examples = {
      {Task::even_pairs, 8, {0, 1, 1, 0, 1, 0, 0, 0}, {0}, 1},
      {Task::modular_arithmetic, 8, {3, 6, 4, 7, 2, 5, 1}, {1}, 1},  // 3 - 4 * 2 + 1 = -4 = 1
      {Task::parity_check, 8, {1, 0, 1, 1, 0, 0, 1, 0}, {0}, 1},
      {Task::cycle_navigation, 6, {2, 2, 2, 0, 1, 2}, {3}, 1},
      {Task::cycle_navigation, 3, {0, 0, 1}, {3}, 1},
      {Task::stack_manipulation, 8, {0, 1, 1, 0, 4, 2, 2, 3}, {0, 1, 1, 0, 2, 0, 0, 0, 0}, 5},
      {Task::reverse_string, 8, {1, 1, 0, 1, 0, 0, 0, 1}, {1, 0, 0, 0, 1, 0, 1, 1}, 8},
      {Task::modular_arithmetic_brackets, 10, {8, 8, 6, 3, 7, 4, 9, 6, 1, 9}, {2}, 1},  // ((-3*4)-1)
      {Task::solve_equation, 10, {7, 7, 6, 9, 8, 5, 1, 8, 10, 3}, {3}, 1},              // ((-x)+1)=3
      {Task::duplicate_string, 4, {1, 0, 1, 1}, {1, 0, 1, 1, 1, 0, 1, 1}, 8},
      {Task::missing_duplicate_string, 9, {0, 1, 1, 0, 0, 2, 1, 0, 3}, {1}, 1},
      {Task::odds_first, 8, {0, 0, 1, 1, 0, 1, 0, 1}, {0, 1, 1, 1, 0, 1, 0, 0}, 8},
      {Task::binary_addition, 8, {1, 0, 1, 2, 0, 1, 1, 0}, {1, 1, 0, 1, 2, 0, 0, 0, 0}, 5},     // 5 + 6
      {Task::binary_multiplication, 8, {1, 0, 1, 2, 0, 1, 1, 0}, {0, 1, 1, 1, 1, 2, 0, 0}, 6},  // 5 * 6
      {Task::compute_sqrt, 7, {0, 0, 1, 0, 1, 1, 0}, {0, 1, 0, 0}, 4},  // isqrt(22) = 4
      {Task::compute_sqrt, 6, {1, 0, 0, 1, 0, 1}, {1, 1, 0}, 3},  // isqrt(37) = 6, not the docstring's 5
      {Task::bucket_sort, 8, {1, 0, 2, 0, 4, 1, 1, 2}, {0, 0, 1, 1, 1, 2, 2, 4}, 8},
  };
  return examples;
}

// Failure messages name the example rather than dumping its bytes.
void PrintTo(const Example& example, std::ostream* out) {
  *out << info(example.task).name << " n = " << example.n << " input " << describe(example.input);
}

class CheGolden : public ::testing::TestWithParam<Example> {};

// The book's target follows from its input under the independent solver, and the mask covers the
// positions the book says.
TEST_P(CheGolden, SolverAndMaskReproduceTheBook) {
  const Example& example = GetParam();
  EXPECT_EQ(static_cast<int>(example.input.size()), input_length(example.task, example.n));
  EXPECT_EQ(static_cast<int>(example.target.size()), output_length(example.task, example.n));
  EXPECT_EQ(solve(example.task, example.input), example.target);
  std::vector<uint8_t> mask(example.target.size(), 0);
  std::fill(mask.begin(), mask.begin() + example.counted, 1);
  EXPECT_EQ(accuracy_mask(example.task, example.target), mask);
}

// The generator can produce the book's input, and then gives the book's target: draw instances until
// one has that input (the rarest, bucket_sort at n = 8, is one draw in 5^8).
TEST_P(CheGolden, GeneratorGivesTheBookTargetForTheBookInput) {
  const Example& example = GetParam();
  Rng rng(2024);
  for (int draw = 0; draw < 10'000'000; ++draw) {
    const Instance instance = generate(example.task, example.n, rng);
    if (instance.input != example.input) continue;
    EXPECT_EQ(instance.target, example.target) << "after " << draw << " draws";
    return;
  }
  FAIL() << "the generator never produced " << describe(example.input);
}

std::string example_test_name(const ::testing::TestParamInfo<Example>& param) {
  return std::string(info(param.param.task).name) + "_" + std::to_string(param.index);
}
INSTANTIATE_TEST_SUITE_P(Che, CheGolden, ::testing::ValuesIn(worked_examples()), example_test_name);

// The degenerate short lengths (CHE.md pitfall 4) are kept as the reference has them.
TEST(CheGoldenDegenerate, ShortLengthsKeepTheReferenceBehaviour) {
  Rng rng(7);
  std::vector<int> seen_addition_n2(3, 0);
  for (int draw = 0; draw < 300; ++draw) {
    EXPECT_EQ(generate(Task::binary_addition, 1, rng).input, Ids{0});  // x ~ U{0..0}
    EXPECT_EQ(generate(Task::binary_addition, 1, rng).target, (Ids{0, 2}));
    const Instance add2 = generate(Task::binary_addition, 2, rng);
    ASSERT_NE(add2.input, (Ids{1, 1})) << "x ~ U{0..2}";
    ++seen_addition_n2[add2.input[0] + 2 * add2.input[1]];
    EXPECT_EQ(generate(Task::binary_multiplication, 1, rng).target, Ids{2});
    const Instance mul2 = generate(Task::binary_multiplication, 2, rng);
    EXPECT_EQ(mul2.target, (Ids{0, 2}));
    EXPECT_NE(mul2.input, (Ids{1, 1}));
    EXPECT_EQ(generate(Task::solve_equation, 1, rng).input, Ids{0});
    const Instance equation2 = generate(Task::solve_equation, 2, rng);
    EXPECT_EQ(equation2.input, (Ids{0, 0}));
    EXPECT_EQ(equation2.target, Ids{0});
    const Instance missing1 = generate(Task::missing_duplicate_string, 1, rng);
    EXPECT_EQ(missing1.input, Ids{1});
    EXPECT_EQ(missing1.target, Ids{1});
    const Instance stack1 = generate(Task::stack_manipulation, 1, rng);
    EXPECT_EQ(stack1.target, (Ids{stack1.input[0], 2}));
    EXPECT_EQ(generate(Task::even_pairs, 1, rng).target, Ids{0});
    const Instance arithmetic2 = generate(Task::modular_arithmetic, 2, rng);
    ASSERT_EQ(arithmetic2.input.size(), 1u);
    EXPECT_EQ(arithmetic2.target, arithmetic2.input);
    const Instance brackets2 = generate(Task::modular_arithmetic_brackets, 2, rng);
    EXPECT_EQ(brackets2.input[0], 6);
    EXPECT_EQ(brackets2.target[0], mod5(-brackets2.input[1]));
  }
  for (int count : seen_addition_n2) EXPECT_GT(count, 0);
}

// ---- Random instances against the solvers. ----

class CheProperty : public ::testing::TestWithParam<TaskInfo> {};

// Lengths, id ranges, target and mask of many instances at n in 1..500, each against the solver.
TEST_P(CheProperty, RandomInstancesMatchIndependentSolver) {
  const TaskInfo& task = GetParam();
  std::vector<int> lengths;
  for (int n = 1; n <= 40; ++n) lengths.insert(lengths.end(), 10, n);
  Rng length_rng(11);
  for (int i = 0; i < 200; ++i) lengths.push_back(41 + static_cast<int>(length_rng.below(460)));
  lengths.insert(lengths.end(), 3, 500);
  uint64_t index = 0;
  for (int n : lengths) {
    const Instance instance = sample(task.task, n, 5, 0, index++);
    SCOPED_TRACE("n = " + std::to_string(n) + ", input " + describe(instance.input));
    ASSERT_EQ(static_cast<int>(instance.input.size()), input_length(task.task, n));
    ASSERT_EQ(static_cast<int>(instance.target.size()), output_length(task.task, n));
    for (int32_t id : instance.input) ASSERT_TRUE(id >= 0 && id < task.input_size) << id;
    for (int32_t id : instance.target) ASSERT_TRUE(id >= 0 && id < task.classes) << id;
    ASSERT_EQ(solve(task.task, instance.input), instance.target);
    const bool has_terminator =
        std::find(instance.target.begin(), instance.target.end(), 2) != instance.target.end();
    ASSERT_TRUE(!task.masked || has_terminator);
    ASSERT_EQ(accuracy_mask(task.task, instance.target), expected_mask(task.task, instance.target));
  }
}

INSTANTIATE_TEST_SUITE_P(Che, CheProperty, ::testing::ValuesIn(all_tasks()), task_test_name);

TEST(CheMask, CoversEverythingWithoutATerminator) {
  EXPECT_EQ(accuracy_mask(Task::binary_addition, {0, 1, 1}), (std::vector<uint8_t>{1, 1, 1}));
  EXPECT_EQ(accuracy_mask(Task::stack_manipulation, {2, 2, 0}), (std::vector<uint8_t>{1, 0, 0}));
  EXPECT_EQ(accuracy_mask(Task::reverse_string, {0, 1}), (std::vector<uint8_t>{1, 1}));
  EXPECT_EQ(accuracy_mask(Task::bucket_sort, {0, 2, 4}), (std::vector<uint8_t>{1, 1, 1}));
}

// ---- Distributions. ----

// Pearson's chi-square of counts against equal expected counts must stay below the 5-sigma point of
// its distribution, taken by the Wilson-Hilferty approximation; every bin must be hit.
void expect_uniform(const std::vector<int64_t>& counts, const std::string& what) {
  double total = 0;
  for (int64_t count : counts) total += static_cast<double>(count);
  const double expected = total / static_cast<double>(counts.size());
  double chi_square = 0;
  for (int64_t count : counts) chi_square += (count - expected) * (count - expected) / expected;
  const double dof = static_cast<double>(counts.size() - 1);
  const double bound = dof * std::pow(1 - 2 / (9 * dof) + 5 * std::sqrt(2 / (9 * dof)), 3);
  std::ostringstream histogram;
  for (int64_t count : counts) histogram << count << ' ';
  EXPECT_LT(chi_square, bound) << what << ": counts " << histogram.str();
  for (int64_t count : counts) EXPECT_GT(count, 0) << what << ": counts " << histogram.str();
}

TEST(CheDistribution, ModularArithmeticOperatorsAndDigitsAreUniform) {
  std::vector<int64_t> operators(3, 0), digits(5, 0);
  for (uint64_t i = 0; i < 2000; ++i) {
    const Instance instance = sample(Task::modular_arithmetic, 101, 1, 0, i);
    for (size_t p = 0; p < instance.input.size(); ++p) {
      if (p % 2 == 0) ++digits.at(instance.input[p]);
      if (p % 2 == 1) ++operators.at(instance.input[p] - 5);
    }
  }
  expect_uniform(operators, "modular_arithmetic operators");
  expect_uniform(digits, "modular_arithmetic digits");
}

// Binary operator frequencies (1/3 each, or 1/2 without '*') and the top-level split a ~ U{1..n-4}.
void check_bracket_distribution(Task task, int n, const BracketSyntax& syntax, int num_operators) {
  std::vector<int64_t> operators(static_cast<size_t>(num_operators), 0), splits(n - 4, 0);
  for (uint64_t i = 0; i < 20000; ++i) {
    const Instance instance = sample(task, n, 3, 0, i);
    const size_t expression_length = task == Task::solve_equation ? n - 2 : n;
    BracketParser parser(instance.input, expression_length, syntax, instance.target[0]);
    ASSERT_TRUE(parser.parse().has_value());
    for (int32_t op : parser.binary_operators) ++operators.at(op - syntax.plus);
    if (task == Task::modular_arithmetic_brackets) ++splits.at(parser.top_split - 1);
  }
  expect_uniform(operators, std::string(info(task).name) + " operators");
  if (task == Task::modular_arithmetic_brackets) expect_uniform(splits, "top-level split a");
}

TEST(CheDistribution, BracketOperatorsAndSplitAreUniform) {
  check_bracket_distribution(Task::modular_arithmetic_brackets, 20, kBracketsSyntax, 3);
  check_bracket_distribution(Task::solve_equation, 40, kEquationSyntax, 2);
}

TEST(CheDistribution, SolveEquationSolutionIsUniform) {
  std::vector<int64_t> solutions(5, 0);
  for (uint64_t i = 0; i < 10000; ++i) ++solutions.at(sample(Task::solve_equation, 25, 4, 0, i).target[0]);
  expect_uniform(solutions, "solve_equation solutions");
}

// At n = 7, e = "(d op d)" has digits at 1 and 3; p ~ U{0..4} reaches 1 from p = 0, 1 and, wrapping
// around from the closing bracket, p = 4; so x lands on position 1 with probability 3/5.
TEST(CheDistribution, SolveEquationHoleSearchWrapsAround) {
  constexpr uint64_t draws = 10000;
  int at_first_digit = 0;
  for (uint64_t i = 0; i < draws; ++i)
    at_first_digit += sample(Task::solve_equation, 7, 12, 0, i).input[1] == 9;
  const double expected = 0.6 * draws, sigma = std::sqrt(draws * 0.6 * 0.4);
  EXPECT_NEAR(at_first_digit, expected, 5 * sigma);
}

TEST(CheDistribution, StackSizeAndActionsAreUniform) {
  const int n = 12;
  std::vector<int64_t> stack_sizes(n - 1, 0), actions(3, 0);
  for (uint64_t i = 0; i < 22000; ++i) {
    const Instance instance = sample(Task::stack_manipulation, n, 5, 0, i);
    const auto first_action =
        std::find_if(instance.input.begin(), instance.input.end(), [](int32_t s) { return s >= 2; });
    ++stack_sizes.at(first_action - instance.input.begin() - 1);
    for (auto it = first_action; it != instance.input.end(); ++it) ++actions.at(*it - 2);
  }
  expect_uniform(stack_sizes, "stack size s over 1..n-1");
  expect_uniform(actions, "stack actions");
}

TEST(CheDistribution, MissingDuplicateHoleIsUniform) {
  for (int n : {9, 10}) {
    std::vector<int64_t> holes(2 * (n / 2), 0);
    for (uint64_t i = 0; i < 16000; ++i) {
      const Ids input = sample(Task::missing_duplicate_string, n, 6, 0, i).input;
      ++holes.at(std::find(input.begin(), input.end(), 2) - input.begin());
    }
    expect_uniform(holes, "hole position at n = " + std::to_string(n));
  }
}

// The split a ~ U{1..n-2}; given a = 3 at n = 8, X ~ U{1..7} and Y ~ U{1..15} (rejection, no modulo).
TEST(CheDistribution, BinaryOperandSplitAndValuesAreUniform) {
  for (Task task : {Task::binary_addition, Task::binary_multiplication}) {
    std::vector<int64_t> splits(10, 0);
    for (uint64_t i = 0; i < 20000; ++i) {
      const Ids input = sample(task, 12, 7, 0, i).input;
      ++splits.at(std::find(input.begin(), input.end(), 2) - input.begin() - 1);
    }
    expect_uniform(splits, std::string(info(task).name) + " split a over 1..n-2");
  }
  std::vector<int64_t> x_values(7, 0), y_values(15, 0);
  for (uint64_t i = 0; i < 36000; ++i) {
    const Ids input = sample(Task::binary_addition, 8, 8, 0, i).input;
    if (input[3] != 2) continue;
    ++x_values.at(input[0] + 2 * input[1] + 4 * input[2] - 1);
    ++y_values.at(input[4] + 2 * input[5] + 4 * input[6] + 8 * input[7] - 1);
  }
  expect_uniform(x_values, "X given a = 3");
  expect_uniform(y_values, "Y given b = 4");
  std::vector<int64_t> degenerate(3, 0);
  for (uint64_t i = 0; i < 6000; ++i) {
    const Ids input = sample(Task::binary_addition, 2, 8, 0, i).input;
    ++degenerate.at(input[0] + 2 * input[1]);
  }
  expect_uniform(degenerate, "degenerate x over 0..2 at n = 2");
}

TEST(CheDistribution, SqrtInputIsUniformAndNeverZero) {
  std::vector<int64_t> values(7, 0);
  for (uint64_t i = 0; i < 14000; ++i) {
    const Ids input = sample(Task::compute_sqrt, 3, 9, 0, i).input;
    const int x = 4 * input[0] + 2 * input[1] + input[2];
    ASSERT_GT(x, 0);
    ++values.at(x - 1);
  }
  expect_uniform(values, "compute_sqrt x over 1..7");
}

TEST(CheDistribution, IidSymbolsAreUniform) {
  for (Task task : {Task::even_pairs, Task::parity_check, Task::cycle_navigation, Task::reverse_string,
                    Task::duplicate_string, Task::odds_first, Task::bucket_sort}) {
    std::vector<int64_t> symbols(static_cast<size_t>(info(task).input_size), 0);
    for (uint64_t i = 0; i < 1000; ++i) {
      for (int32_t symbol : sample(task, 50, 10, 0, i).input) ++symbols.at(symbol);
    }
    expect_uniform(symbols, std::string(info(task).name) + " symbols");
  }
}

// ---- Counter-based sampling. ----

TEST(CheSampling, SampleIsTheDocumentedCounterKeyedStream) {
  for (const TaskInfo& task : all_tasks()) {
    SCOPED_TRACE(task.name);
    for (uint64_t index : {0ull, 1ull, 77ull}) {
      const uint64_t seed = 1234, step = 99;
      Rng rng(Rng::mix(Rng::mix(Rng::mix(seed ^ kSampleStream) ^ step) ^ index));
      const Instance expected = generate(task.task, 33, rng);
      const Instance first = sample(task.task, 33, seed, step, index);
      const Instance again = sample(task.task, 33, seed, step, index);
      EXPECT_EQ(first.input, expected.input);
      EXPECT_EQ(first.target, expected.target);
      EXPECT_EQ(again.input, first.input);
      EXPECT_EQ(again.target, first.target);
    }
  }
}

TEST(CheSampling, IndicesStepsAndSeedsGiveDifferentInstances) {
  // 64 fair bits: two equal inputs would be a 2^-64 event.
  std::vector<Ids> inputs;
  for (uint64_t index = 0; index < 64; ++index)
    inputs.push_back(sample(Task::reverse_string, 64, 1, 0, index).input);
  inputs.push_back(sample(Task::reverse_string, 64, 1, 1, 0).input);
  inputs.push_back(sample(Task::reverse_string, 64, 2, 0, 0).input);
  std::sort(inputs.begin(), inputs.end());
  EXPECT_EQ(std::adjacent_find(inputs.begin(), inputs.end()), inputs.end());
}

// A batch made by any number of threads, in any order, is the same batch.
TEST(CheSampling, BatchDoesNotDependOnThreadCountOrOrder) {
  constexpr int batch = 96;
  std::vector<Instance> serial(batch), threaded(batch), reversed(batch);
  for (int b = 0; b < batch; ++b) serial[b] = sample(Task::binary_multiplication, 300, 42, 17, b);
  for (int b = batch - 1; b >= 0; --b) reversed[b] = sample(Task::binary_multiplication, 300, 42, 17, b);
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&threaded, t] {
      for (int b = t; b < batch; b += 3) threaded[b] = sample(Task::binary_multiplication, 300, 42, 17, b);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int b = 0; b < batch; ++b) {
    EXPECT_EQ(threaded[b].input, serial[b].input);
    EXPECT_EQ(threaded[b].target, serial[b].target);
    EXPECT_EQ(reversed[b].input, serial[b].input);
  }
}

TEST(CheSampling, StepLengthIsUniformOverTheRangeAndKeyedBySeedAndStep) {
  std::vector<int64_t> lengths(40, 0);
  int same_under_other_seed = 0;
  for (uint64_t step = 0; step < 40000; ++step) {
    const int n = sample_length(3, step, 1, 40);
    ASSERT_TRUE(n >= 1 && n <= 40) << n;
    ++lengths.at(n - 1);
    ASSERT_EQ(sample_length(3, step, 1, 40), n);
    same_under_other_seed += sample_length(4, step, 1, 40) == n;
    const Rng documented(Rng::mix(Rng::mix(3 ^ kLengthStream) ^ step));
    ASSERT_EQ(n, 1 + static_cast<int>(Rng(documented).below(40)));
  }
  expect_uniform(lengths, "training lengths over 1..40");
  EXPECT_LT(same_under_other_seed, 2000);  // about 1/40 of the steps agree by chance
  EXPECT_EQ(sample_length(3, 5, 41, 41), 41);
}

// ---- Errors users read. ----

TEST(CheErrors, UnknownTaskNamesTheValueAndListsTheChoices) {
  EXPECT_EQ(error_message([] { parse_task("even_pair"); }),
            "unknown CHE task 'even_pair'; expected one of: even_pairs, modular_arithmetic, parity_check, "
            "cycle_navigation, stack_manipulation, reverse_string, modular_arithmetic_brackets, "
            "solve_equation, duplicate_string, missing_duplicate_string, odds_first, binary_addition, "
            "binary_multiplication, compute_sqrt, bucket_sort");
  EXPECT_THROW(parse_task(""), ConfigError);
}

TEST(CheErrors, NonPositiveLengthsThrowConfigErrorNamingTheTask) {
  Rng rng(1);
  EXPECT_THROW(generate(Task::even_pairs, 0, rng), ConfigError);
  EXPECT_THROW(sample(Task::bucket_sort, 0, 1, 0, 0), ConfigError);
  EXPECT_THROW(input_length(Task::odds_first, 0), ConfigError);
  EXPECT_THROW(output_length(Task::compute_sqrt, -3), ConfigError);
  EXPECT_EQ(error_message([&rng] { generate(Task::solve_equation, 0, rng); }),
            "CHE task 'solve_equation': requested length n = 0 is invalid; expected n >= 1");
  EXPECT_EQ(error_message([] { sample_length(1, 0, 0, 40); }),
            "CHE length range [0, 40] is invalid; expected 1 <= lo <= hi");
  EXPECT_THROW(sample_length(1, 0, 5, 4), ConfigError);
}

}  // namespace

// Failure messages name the task rather than dumping its bytes (found by argument-dependent lookup, so it
// lives in TaskInfo's namespace).
void PrintTo(const TaskInfo& task, std::ostream* out) {
  *out << task.name;
}

}  // namespace dape::data::che
