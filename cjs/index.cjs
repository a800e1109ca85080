'use strict';
// require('@rex-cluster/rex') and require('@rex-cluster/rex/runtime'): cjs/load.cjs says what it does.
module.exports = require('./load.cjs')(require, '../dist/runtime/index.js', '@rex-cluster/rex');
