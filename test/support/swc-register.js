// Lets a plain-JS child process of the tests require the project's TypeScript sources: `.ts` files
// are compiled on require with @swc/core and the options jest uses, so parent and children run the
// same source whatever state dist/ is in.
'use strict';
const fs = require('node:fs');
const { transformSync } = require('@swc/core');

require.extensions['.ts'] = (module, filename) => {
  const { code } = transformSync(fs.readFileSync(filename, 'utf8'), {
    filename,
    jsc: { target: 'es2023', parser: { syntax: 'typescript' } },
    module: { type: 'commonjs' },
  });
  module._compile(code, filename);
};
