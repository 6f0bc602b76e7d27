// kinesalite on 127.0.0.1 and a free port (its CLI binds every interface):
// prints "listening on PORT" once it accepts connections.
const kinesalite = require('kinesalite');

const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0 });
server.listen(0, '127.0.0.1', (error) => {
  if (error) throw error;
  console.log('listening on ' + server.address().port);
});
