update cbir.label l
set key = 'US/breast/normal', finding = 'normal'
where l.key = 'US/breast/benign_or_normal'
  and not exists (select 1 from cbir.label n where n.key = 'US/breast/normal')
  and exists (select 1 from cbir.label_map m join cbir.dataset d on d.id = m.dataset_id
              where m.label_id = l.id and d.kind = 'medmnist' and m.source_label = 'normal, benign');
