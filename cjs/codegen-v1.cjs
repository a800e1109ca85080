'use strict';
// require('@rex-cluster/rex/runtime/codegen-v1'): cjs/load.cjs says what it does.
module.exports = require('./load.cjs')(require, '../dist/runtime/codegen-v1.js', '@rex-cluster/rex/runtime/codegen-v1');
